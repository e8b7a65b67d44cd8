import { DiscardPolicy, RetentionPolicy, StorageType, type StreamConfig } from '@nats-io/jetstream';
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { durationNanos } from '../runtime/duration.ts';
import { attemptStream, attemptSubjects, replayStream, replaySubject } from './layout.ts';

type HistorySpec = WebhookSubscriptionSpec['history'];

/**
 * The attempt records of one subscription: kept for `history.maxAge`, at most `history.maxRecords` (the oldest go
 * first), so a busy subscription cannot fill the NATS disk. Replicas as for dead letters: the operator passes the
 * sources' own, a dispatcher leaves an existing stream's as they are.
 */
export function attemptStreamConfig(
  namespace: string,
  subscription: string,
  history: HistorySpec,
  replicas?: number,
): Partial<StreamConfig> & { name: string } {
  return {
    name: attemptStream(namespace, subscription),
    description: `Hookyard delivery attempts of WebhookSubscription ${namespace}/${subscription}`,
    subjects: [attemptSubjects(namespace, subscription)],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    ...(replicas === undefined ? {} : { num_replicas: replicas }),
    max_age: durationNanos(history.maxAge),
    max_msgs: history.maxRecords,
    discard: DiscardPolicy.Old,
    allow_direct: true,
  };
}

/**
 * The replay stream of one subscription: copies of the events a replay request asked for, each removed once the
 * dispatcher is done with it (work-queue retention). No age limit: a copy still retrying, or waiting while the
 * subscription is paused, stays until it is delivered or dead-lettered again (its dead letter is already gone).
 * Copies are published with the request id in their message id, so a request the operator starts over within a
 * day (it stopped before writing status) queues no event twice.
 */
export function replayStreamConfig(
  namespace: string,
  subscription: string,
  replicas?: number,
): Partial<StreamConfig> & { name: string } {
  return {
    name: replayStream(namespace, subscription),
    description: `Hookyard replays of WebhookSubscription ${namespace}/${subscription}`,
    subjects: [replaySubject(namespace, subscription)],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    ...(replicas === undefined ? {} : { num_replicas: replicas }),
    max_age: 0,
    duplicate_window: durationNanos('24h'),
  };
}
