import { RetentionPolicy, StorageType, type StreamConfig } from '@nats-io/jetstream';
import { durationNanos } from '../runtime/duration.ts';
import { deadLetterStream, deadLetterSubject } from './layout.ts';

/**
 * The dead-letter stream of one subscription: events whose delivery failed for good, kept for `maxAge`. The
 * operator gives it as many `replicas` as the most replicated of the streams it dead-letters from, so it is as
 * safe as they are; without `replicas` (a dispatcher making sure the stream exists) an existing stream keeps its
 * own, and a new one has 1.
 */
export function deadLetterStreamConfig(
  namespace: string,
  subscription: string,
  maxAge: string,
  replicas?: number,
): Partial<StreamConfig> & { name: string } {
  return {
    name: deadLetterStream(namespace, subscription),
    description: `Hookyard dead letters of WebhookSubscription ${namespace}/${subscription}`,
    subjects: [deadLetterSubject(namespace, subscription)],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    ...(replicas === undefined ? {} : { num_replicas: replicas }),
    max_age: durationNanos(maxAge),
    // Dead letters are published with the source stream and sequence as their id, so a dispatcher that dies
    // between the dead letter's PubAck and terminating the original does not store it twice.
    duplicate_window: Math.min(durationNanos('10m'), durationNanos(maxAge)),
  };
}
