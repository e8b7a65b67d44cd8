// Publishes to JetStream that wait for their PubAck, all answered on one subscription. js.publish makes each a
// nats.js request, and nats.js builds an error with a stack trace for every request it settles, even one that
// succeeded (RequestOne.cancel rejects the settled promise with a new RequestError): 7 % of the receiver's CPU in
// its bench (docs/benchmarks.md). The subscription is nats.js's own, so it is made again after a reconnect; a
// publish not answered in time fails, as js.publish's does.
import {
  createInbox,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  headers as natsHeaders,
} from '@nats-io/transport-node';

export interface PubAck {
  stream: string;
  seq: number;
  /** JetStream already had a message with this Nats-Msg-Id within the stream's duplicate window. */
  duplicate: boolean;
}

export interface PublishOptions {
  /** Nats-Msg-Id: JetStream stores one message per id within the stream's duplicate window. */
  msgID?: string;
  headers?: MsgHdrs;
}

export interface JetStreamPublisher {
  /** Rejects when JetStream refuses the message, has no stream for the subject, or does not answer in time. */
  publish(subject: string, data?: Uint8Array | string, options?: PublishOptions): Promise<PubAck>;
  /** Fails what still waits for an answer, and stops listening. */
  close(): void;
}

export class PublishFailed extends Error {}

export function jetstreamPublisher(nc: NatsConnection, timeoutMs = 5000): JetStreamPublisher {
  const inbox = `${createInbox()}.`;
  /** Publishes not answered yet: number → when sent; in sending order, so the oldest come first. */
  const waiting = new Map<number, { at: number; ok: (ack: PubAck) => void; fail: (err: Error) => void }>();
  let sent = 0;
  const answers = nc.subscribe(`${inbox}*`, {
    callback: (err, m) => {
      if (err) return;
      const n = Number(m.subject.slice(inbox.length));
      const publish = waiting.get(n);
      if (!publish) return;
      waiting.delete(n);
      const answer = pubAckOf(m);
      if (typeof answer === 'string') publish.fail(new PublishFailed(answer));
      else publish.ok(answer);
    },
  });
  // One sweep for every deadline rather than a timer per publish.
  const sweep = setInterval(
    () => {
      const now = performance.now();
      for (const [n, publish] of waiting) {
        if (now - publish.at < timeoutMs) break;
        waiting.delete(n);
        publish.fail(new PublishFailed(`no answer from JetStream within ${timeoutMs}ms`));
      }
    },
    Math.min(1000, Math.max(10, timeoutMs / 10)),
  );
  sweep.unref();
  return {
    publish(subject, data, options = {}) {
      let headers = options.headers;
      if (options.msgID) {
        headers ??= natsHeaders();
        headers.append('Nats-Msg-Id', options.msgID);
      }
      const n = ++sent;
      return new Promise<PubAck>((ok, fail) => {
        waiting.set(n, { at: performance.now(), ok, fail });
        try {
          nc.publish(subject, data, { reply: `${inbox}${n}`, headers });
        } catch (err) {
          waiting.delete(n); // the connection is closed
          fail(err as Error);
        }
      });
    },
    close() {
      clearInterval(sweep);
      answers.unsubscribe();
      for (const publish of waiting.values()) publish.fail(new PublishFailed('publisher closed'));
      waiting.clear();
    },
  };
}

/** The PubAck in JetStream's answer, or why it did not store the message. */
function pubAckOf(answer: Msg): PubAck | string {
  if (answer.headers?.hasError) return `${answer.headers.code} ${answer.headers.description}`; // 503: no stream
  try {
    const ack = answer.json() as Partial<PubAck> & { error?: { description?: string } };
    if (ack.error) return ack.error.description ?? 'refused';
    return { stream: ack.stream ?? '', seq: ack.seq ?? 0, duplicate: ack.duplicate === true };
  } catch {
    return 'unreadable answer';
  }
}
