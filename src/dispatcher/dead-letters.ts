// The dead-letter phase: an event whose delivery failed for good is stored in the subscription's dead-letter
// stream (and posted to the sink, if any), and only after the PubAck is the original terminated.
import type { JetStreamClient, JsMsg } from '@nats-io/jetstream';
import { type MsgHdrs, headers as natsHeaders } from '@nats-io/transport-node';
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { deadLetterSubject, headers as h } from '../jetstream/layout.ts';
import type { Logger } from '../runtime/log.ts';
import type { DispatcherMetrics } from './metrics.ts';
import { type AttemptResult, describeResult } from './outcome.ts';
import { Target } from './target.ts';

/** ordering: an earlier event of the key was dead-lettered and spec.ordering.onDeadLetter is DeadLetterRest. */
export type DeadLetterReason = 'exhausted' | 'permanent' | 'ordering';

/** Headers of a dead letter: the original ones, and why and after how many attempts it failed. */
export function deadLetterHeaders(
  original: MsgHdrs | undefined,
  info: {
    eventId: string;
    receivedAt: Date;
    attempts: number;
    stream: string;
    sequence: number;
    result?: AttemptResult;
    error?: string;
  },
): MsgHdrs {
  const out = natsHeaders();
  if (original) {
    for (const key of original.keys()) {
      // Nats-* headers steer the publish itself (dedup id, expectations); they are not part of the event.
      if (key.toLowerCase().startsWith('nats-')) continue;
      for (const value of original.values(key)) out.append(key, value);
    }
  }
  out.set(h.deadLetterEventId, info.eventId);
  out.set(h.receivedAt, info.receivedAt.toISOString());
  if (info.result?.kind === 'Response') out.set(h.lastStatus, String(info.result.status));
  out.set(h.lastError, (info.error ?? (info.result ? describeResult(info.result) : 'unknown')).slice(0, 512));
  out.set(h.attempts, String(info.attempts));
  out.set(h.sourceStream, info.stream);
  out.set(h.sourceSequence, String(info.sequence));
  return out;
}

/** What an ordered subscription does around a dead letter (src/dispatcher/ordered-intake.ts). */
export interface DeadLetterOrdering {
  /** After the dead letter's PubAck, before the original is terminated (DeadLetterRest records the key here). */
  deadLettered(msg: JsMsg): Promise<void>;
  /** Sends `+ACK` or `+TERM <reason>` for the message and returns once JetStream confirmed it. */
  confirm(msg: JsMsg, how: string): Promise<void>;
}

export interface DeadLetterOptions {
  spec: WebhookSubscriptionSpec;
  namespace: string;
  subscription: string;
  js: JetStreamClient;
  metrics: DispatcherMetrics;
  log: Logger;
  userAgent: string;
}

export function createDeadLetters(options: DeadLetterOptions) {
  const { spec, metrics, log } = options;
  // The sink goes through the same guarded pool as targets: no link-local or metadata addresses unless allowed.
  const sink = spec.deadLetter.sinkUrl
    ? new Target({
        url: spec.deadLetter.sinkUrl,
        timeoutMs: 10_000,
        connections: 2,
        allowPrivateAddresses: spec.target.allowPrivateAddresses,
      })
    : undefined;

  async function postToSink(body: Uint8Array, headers: MsgHdrs) {
    if (!sink) return;
    // Best effort: the dead letter is already stored; the sink is a notification.
    const plain: Record<string, string> = { 'user-agent': options.userAgent };
    for (const key of headers.keys()) plain[key] = headers.get(key);
    const result = await sink.send({ method: 'POST', headers: plain, body });
    if (result.kind !== 'Response' || result.status >= 300) {
      log.warn({ result: describeResult(result) }, 'dead-letter sink did not take the dead letter');
    }
  }

  return {
    /**
     * Stores the event as a dead letter, then terminates the original (or only terminates it, when disabled).
     * `ordering`: the term is confirmed before this returns, so that the key's next event starts only then.
     */
    async store(
      msg: JsMsg,
      attempts: number,
      reason: DeadLetterReason,
      result?: AttemptResult,
      ordering?: DeadLetterOrdering,
    ): Promise<void> {
      const error = result ? undefined : 'attempts used up by deliveries that were interrupted';
      const terminate = (why: string) => (ordering ? ordering.confirm(msg, `+TERM ${why}`) : msg.term(why));
      if (!spec.deadLetter.enabled) {
        await terminate(`delivery failed (${reason}); dead letters are disabled`);
        metrics.discarded(reason);
        return;
      }
      const headers = deadLetterHeaders(msg.headers, {
        eventId: msg.headers?.get(h.eventId) ?? '',
        receivedAt: new Date(msg.info.timestampNanos / 1e6),
        attempts,
        // A replayed copy keeps naming the stream and sequence the event was first stored at.
        stream: msg.headers?.get(h.sourceStream) || msg.info.stream,
        sequence: Number(msg.headers?.get(h.sourceSequence) || msg.seq),
        result,
        error,
      });
      // The PubAck says the dead letter is stored; only then is the original given up. The id names the stored
      // message, so a retried publish is stored once; with its store time, since a stream deleted and made again
      // starts its sequences at 1, and within the duplicate window a new event's dead letter would be taken for
      // the old one's and dropped while the event is terminated.
      await options.js.publish(deadLetterSubject(options.namespace, options.subscription), msg.data, {
        msgID: `${msg.info.stream}:${msg.seq}:${msg.info.timestampNanos}`,
        headers,
      });
      await ordering?.deadLettered(msg);
      await terminate(`dead-lettered (${reason})`);
      metrics.deadLetter(reason);
      const last = error ?? describeResult(result as AttemptResult);
      log.warn({ eventId: msg.headers?.get(h.eventId), attempts, reason, last }, 'event dead-lettered');
      void postToSink(msg.data, headers);
    },
    close: () => sink?.close(),
  };
}
