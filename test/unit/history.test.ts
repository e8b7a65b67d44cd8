// The attempt records' bookkeeping, without NATS: a JetStream that never answers stands in for one too slow to
// acknowledge (a real server cannot be made to hold its PubAcks on demand).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { NatsConnection } from '@nats-io/transport-node';
import pino from 'pino';
import type { StoredEvent } from '../../src/dispatcher/event.ts';
import { createHistory, maxPendingRecords } from '../../src/dispatcher/history.ts';

describe('attempt records', () => {
  it('hold at most maxPendingRecords waiting for their PubAck, and count those dropped past it', () => {
    let published = 0;
    // Records are plain publishes answered on one subscription; this one never hears an answer.
    const silent = {
      publish: () => published++,
      subscribe: () => ({ unsubscribe() {} }),
    } as unknown as NatsConnection;
    const lines: { msg: string }[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    let dropped = 0;
    const history = createHistory({
      enabled: true,
      namespace: 'shop',
      subscription: 'orders',
      nc: silent,
      log,
      onFailure: (records) => (dropped += records),
      later: (write) => write(),
    });
    const event = { id: 'evt_1', type: 'order.shipped', endpoint: 'shop/shopflix' } as StoredEvent;
    const attempt = { number: 1, startedAt: Date.now(), durationMs: 1 };
    for (let i = 0; i < maxPendingRecords + 10; i++)
      history.record(event, attempt, { kind: 'Response', status: 200 }, { action: 'ack' });
    assert.equal(published, maxPendingRecords);
    assert.equal(dropped, 10);
    assert.deepEqual(
      lines.map((l) => l.msg),
      ['attempt record not stored; delivery goes on'],
      'one warning a minute, however many are dropped',
    );
  });
});
