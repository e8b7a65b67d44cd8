import { RetentionPolicy, StorageType, type StreamConfig } from '@nats-io/jetstream';
import { durationNanos } from '../runtime/duration.ts';
import { deadLetterStream, deadLetterSubject } from './layout.ts';

/** The dead-letter stream of one subscription: events whose delivery failed for good, kept for `maxAge`. */
export function deadLetterStreamConfig(
  namespace: string,
  subscription: string,
  maxAge: string,
): Partial<StreamConfig> & { name: string } {
  return {
    name: deadLetterStream(namespace, subscription),
    description: `Hookyard dead letters of WebhookSubscription ${namespace}/${subscription}`,
    subjects: [deadLetterSubject(namespace, subscription)],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    num_replicas: 1,
    max_age: durationNanos(maxAge),
    // Dead letters are published with the source stream and sequence as their id, so a dispatcher that dies
    // between the dead letter's PubAck and terminating the original does not store it twice.
    duplicate_window: Math.min(durationNanos('10m'), durationNanos(maxAge)),
  };
}
