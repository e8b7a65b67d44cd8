// Tracing's pure parts: the sampler OTEL_TRACES_SAMPLER names, where spans are sent, and the trace context that an
// event's dead letter and replayed copy keep, so their attempts join the original's trace.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { headers as natsHeaders } from '@nats-io/transport-node';
import { deadLetterHeaders } from '../../src/dispatcher/dead-letters.ts';
import { storedEvent } from '../../src/dispatcher/event.ts';
import { headers as h } from '../../src/jetstream/layout.ts';
import { samplerFromEnv, tracesUrl } from '../../src/runtime/otel.ts';
import { samplers } from '../../src/runtime/tracing.ts';

describe('tracing', () => {
  it('builds every sampler OTEL_TRACES_SAMPLER names, parent-based always-on by default', () => {
    assert.match(String(samplerFromEnv({})), /^ParentBased\{root=AlwaysOnSampler/);
    for (const name of samplers) assert.ok(samplerFromEnv({ OTEL_TRACES_SAMPLER: name }));
    assert.match(
      String(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' })),
      /TraceIdRatioBased\{0\.25\}/,
    );
    assert.throws(
      () => samplerFromEnv({ OTEL_TRACES_SAMPLER: 'jaeger_remote' }),
      /is not one of parentbased_always_on/,
    );
    assert.throws(() => samplerFromEnv({ OTEL_TRACES_SAMPLER_ARG: '2' }), /not a ratio between 0 and 1/);
  });

  it('sends spans to <endpoint>/v1/traces, as OTEL_EXPORTER_OTLP_ENDPOINT means it', () => {
    assert.equal(tracesUrl('http://collector:4318'), 'http://collector:4318/v1/traces');
    assert.equal(tracesUrl('http://collector:4318/'), 'http://collector:4318/v1/traces');
  });

  it("keeps the receiver's trace context in a dead letter, so a replayed attempt is a child of the original", () => {
    const original = natsHeaders();
    original.set(h.eventId, 'evt-1');
    original.set(h.traceparent, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
    original.set(h.tracestate, 'vendor=1');
    const dead = deadLetterHeaders(original, {
      eventId: 'evt-1',
      receivedAt: new Date(),
      attempts: 3,
      stream: 'hookyard_shop_orders',
      sequence: 7,
    });
    for (const headers of [original, dead]) {
      assert.deepEqual(storedEvent({ data: new Uint8Array(), headers }, 'shop/orders').trace, {
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        tracestate: 'vendor=1',
      });
    }
    assert.equal(storedEvent({ data: new Uint8Array(), headers: natsHeaders() }, 'shop/orders').trace, undefined);
  });
});
