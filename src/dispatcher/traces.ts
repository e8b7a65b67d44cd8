// A delivery attempt's span: a CLIENT span, the child of the receiver's span stored with the event (a new trace
// for an event stored without one), whose context goes to the target as traceparent. A replayed event carries
// the original's stored context, so its attempts join the original's trace.
import type { WebhookSubscription } from '../api/webhook-subscription.ts';
import { spanAttributes as attr, type Tracer, type TraceSpan } from '../runtime/tracing.ts';
import type { StoredEvent } from './event.ts';
import { type AttemptResult, describeResult } from './outcome.ts';

export interface TracedSubscription {
  /** `<namespace>/<name>` */
  subscription: string;
  target: URL;
  method: string;
}

export const tracedSubscription = (subscription: WebhookSubscription, target: URL): TracedSubscription => ({
  subscription: `${subscription.metadata.namespace ?? 'default'}/${subscription.metadata.name}`,
  target,
  method: subscription.spec.target.method,
});

export function startAttemptSpan(
  tracer: Tracer,
  traced: TracedSubscription,
  event: StoredEvent,
  attempt: number,
): TraceSpan {
  const { target } = traced;
  return tracer.start('client', `deliver ${traced.subscription}`, event.trace, {
    [attr.subscription]: traced.subscription,
    [attr.endpoint]: event.endpoint,
    [attr.eventType]: event.type,
    [attr.eventId]: event.id,
    [attr.attempt]: attempt,
    [attr.replay]: event.replay,
    [attr.httpMethod]: traced.method,
    // Host and port only: a target URL's path or query may hold a token.
    [attr.serverAddress]: target.hostname,
    [attr.serverPort]: Number(target.port) || (target.protocol === 'https:' ? 443 : 80),
  });
}

/** `outcome`: what the attempt led to (delivered, retried, paused, dead_lettered); anything but a 2xx is an error. */
export function endAttemptSpan(span: TraceSpan, result: AttemptResult, outcome: string): void {
  const status = result.kind === 'Response' ? result.status : undefined;
  const ok = status !== undefined && status >= 200 && status < 300;
  span.set({
    [attr.httpStatus]: status,
    [attr.outcome]: outcome,
    [attr.errorType]: ok ? undefined : status !== undefined ? String(status) : result.kind,
  });
  span.end(ok ? undefined : describeResult(result));
}
