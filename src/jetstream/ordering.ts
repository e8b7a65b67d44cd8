// The ordering ledger of one WebhookSubscription with spec.ordering: a small stream that records, per source
// stream, which events wait for a retry (so that a dispatcher that takes over knows which keys are blocked and by
// which event) and, with onDeadLetter: DeadLetterRest, which keys have a dead letter. One message per record,
// one subject per record; a record is removed by purging its subject. Nothing is written on the happy path.
import { type JetStreamManager, RetentionPolicy, StorageType, type StreamConfig } from '@nats-io/jetstream';
import { durationNanos } from '../runtime/duration.ts';
import { isStreamNotFound } from './streams.ts';

export const orderingStream = (namespace: string, subscription: string) =>
  `hookyard-ordering_${namespace}_${subscription}`;
const orderingSubjects = (namespace: string, subscription: string) => `hookyard-ordering.${namespace}.${subscription}`;

/** The key of a retry record of an event without a key (delivered without ordering). */
export const unkeyedRecord = '-';

/** The subject of "event `seq` of `stream`, with key hash `key`, waits for a retry". */
export const retryRecordSubject = (namespace: string, subscription: string, stream: string, seq: number, key: string) =>
  `${orderingSubjects(namespace, subscription)}.retry.${stream}.${seq}.${key}`;
export const retryRecordFilter = (namespace: string, subscription: string, stream?: string) =>
  `${orderingSubjects(namespace, subscription)}.retry.${stream ? `${stream}.` : ''}>`;

/** The subject of "key hash `key` of `stream` has a dead letter" (onDeadLetter: DeadLetterRest). */
export const deadKeySubject = (namespace: string, subscription: string, stream: string, key: string) =>
  `${orderingSubjects(namespace, subscription)}.dead.${stream}.${key}`;
export const deadKeyFilter = (namespace: string, subscription: string, stream?: string) =>
  `${orderingSubjects(namespace, subscription)}.dead.${stream ? `${stream}.` : ''}>`;

/**
 * With onDeadLetter DeadLetterRest: forgets every key's dead-letter mark, once the dead letters were replayed (or
 * purged); the dispatchers read the marks again. A subscription without an ordering stream has none.
 */
export async function clearDeadKeys(jsm: JetStreamManager, namespace: string, subscription: string) {
  await jsm.streams
    .purge(orderingStream(namespace, subscription), { filter: deadKeyFilter(namespace, subscription) })
    .catch((err: unknown) => {
      if (!isStreamNotFound(err)) throw err;
    });
}

/** Reads a retry record's subject back: its stream sequence and key hash. */
export function parseRetryRecord(subject: string): { seq: number; key: string } | undefined {
  const tokens = subject.split('.');
  const seq = Number(tokens.at(-2));
  const key = tokens.at(-1);
  return Number.isSafeInteger(seq) && key ? { seq, key } : undefined;
}

/**
 * The ledger stream. Like the dead letters it follows its sources' replicas when the operator makes it; a
 * dispatcher making sure it exists leaves an existing stream's replicas alone and gives a new one 1. Records live
 * as long as dead letters (`maxAge`): a key's dead-letter mark goes when its dead letters would.
 */
export function orderingStreamConfig(
  namespace: string,
  subscription: string,
  maxAge: string,
  replicas?: number,
): Partial<StreamConfig> & { name: string } {
  return {
    name: orderingStream(namespace, subscription),
    description: `Hookyard ordering records of WebhookSubscription ${namespace}/${subscription}`,
    subjects: [`${orderingSubjects(namespace, subscription)}.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    ...(replicas === undefined ? {} : { num_replicas: replicas }),
    max_age: durationNanos(maxAge),
    max_msgs_per_subject: 1,
    allow_direct: true,
  };
}

/**
 * What status says about an ordered subscription: how many keys wait for a retried event (the retry records of
 * events with a key), and since when the longest-waiting one has (its record's time).
 */
export async function orderingStatus(
  jsm: JetStreamManager,
  namespace: string,
  subscription: string,
): Promise<{ blockedKeys: number; blockedSince?: string }> {
  const stream = orderingStream(namespace, subscription);
  const filter = retryRecordFilter(namespace, subscription);
  const info = await jsm.streams.info(stream, { subjects_filter: filter });
  const keyed = (subject: string) => !subject.endsWith(`.${unkeyedRecord}`);
  const blockedKeys = Object.keys(info.state.subjects ?? {}).filter(keyed).length;
  if (blockedKeys === 0) return { blockedKeys };
  // Records are in the order they were written: the first with a key is the oldest block.
  let seq = info.state.first_seq;
  for (let i = 0; i < 100; i++) {
    const m = await jsm.direct.getMessage(stream, { next_by_subj: filter, seq });
    if (!m) break;
    if (keyed(m.subject)) return { blockedKeys, blockedSince: m.time.toISOString().replace(/\.\d+Z$/, 'Z') };
    seq = m.seq + 1;
  }
  return { blockedKeys };
}
