// Reading what JetStream keeps about a subscription: its attempt records, by event or all of them. An ordered
// consumer (ephemeral, removed by the server once idle) reads a stream from the start or from a time, and stops at
// what was there when it started.
import { DeliverPolicy, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import type { AttemptRecord } from '../dispatcher/history.ts';
import {
  attemptStream,
  attemptSubject,
  attemptSubjects,
  duplicateStream,
  duplicateSubjects,
} from '../jetstream/layout.ts';
import { isStreamNotFound } from '../jetstream/streams.ts';

export interface ReadOptions {
  filterSubjects?: string[];
  /** Only messages stored at or after this time. */
  since?: Date;
  /** At most this many messages. */
  limit?: number;
}

/** Every message of `stream` the options select, oldest first; a stream that does not exist has none. */
export async function* readStream(js: JetStreamClient, stream: string, options: ReadOptions = {}) {
  const consumer = await js.consumers
    .get(stream, {
      ...(options.filterSubjects ? { filter_subjects: options.filterSubjects } : {}),
      ...(options.since
        ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: options.since.toISOString() }
        : {}),
    })
    .catch((err: unknown) => {
      if (isStreamNotFound(err)) return undefined;
      throw err;
    });
  if (!consumer) return;
  let left = options.limit ?? Number.POSITIVE_INFINITY;
  try {
    if ((await consumer.info()).num_pending === 0) return;
    for (;;) {
      const batch = await consumer.fetch({ max_messages: Math.min(256, left), expires: 2000 });
      let last: JsMsg | undefined;
      for await (const m of batch) {
        last = m;
        yield m;
        if (--left === 0 || m.info.pending === 0) {
          batch.stop();
          return;
        }
      }
      if (!last) return;
    }
  } finally {
    await consumer.delete().catch(() => {});
  }
}

/** The attempt records of a subscription, oldest first: all of them, or those of one event. */
export async function readAttempts(
  js: JetStreamClient,
  namespace: string,
  subscription: string,
  options: { eventId?: string; since?: Date; limit?: number } = {},
): Promise<AttemptRecord[]> {
  const subject = options.eventId
    ? attemptSubject(namespace, subscription, options.eventId)
    : attemptSubjects(namespace, subscription);
  const out: AttemptRecord[] = [];
  const stream = attemptStream(namespace, subscription);
  for await (const m of readStream(js, stream, { ...options, filterSubjects: [subject] })) {
    try {
      out.push(m.json<AttemptRecord>());
    } catch {
      // Not a record the dispatcher wrote (anyone with NATS access can publish here): not part of the history.
    }
  }
  return out;
}

/**
 * How many times the receiver answered each event id as a duplicate (the provider sent it again within the dedup
 * window): read from the duplicate records' subjects, one count per event id, without reading the records.
 */
export async function duplicateCounts(js: JetStreamClient, namespace: string, endpoint: string) {
  const jsm = await js.jetstreamManager();
  const info = await jsm.streams
    .info(duplicateStream(namespace, endpoint), { subjects_filter: duplicateSubjects(namespace, endpoint) })
    .catch((err: unknown) => {
      if (isStreamNotFound(err)) return undefined;
      throw err;
    });
  const counts = new Map<string, number>();
  for (const [subject, n] of Object.entries(info?.state.subjects ?? {})) {
    const token = subject.split('.').at(-1) ?? '';
    counts.set(token === '_' ? '' : Buffer.from(token, 'base64url').toString(), n);
  }
  return counts;
}
