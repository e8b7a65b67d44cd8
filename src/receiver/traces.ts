// The receiver's span: one per webhook request, a SERVER span that continues the request's own traceparent (a
// provider or a gateway that traces) and whose context is stored with the event for the delivery attempts.
import type { IncomingMessage } from 'node:http';
import { spanAttributes as attr, type Tracer, type TraceSpan } from '../runtime/tracing.ts';
import type { Outcome } from './errors.ts';

const route = '/hooks/{namespace}/{endpoint}';

export function startRequestSpan(
  tracer: Tracer,
  req: IncomingMessage,
  params: { namespace: string; endpoint: string },
): TraceSpan {
  const { traceparent, tracestate } = req.headers;
  const parent = typeof traceparent === 'string' ? { traceparent, tracestate: first(tracestate) } : undefined;
  return tracer.start('server', `POST ${route}`, parent, {
    [attr.httpMethod]: req.method,
    [attr.httpRoute]: route,
    // The path, never the query string: a queryToken endpoint's token is in it.
    [attr.urlPath]: (req.url ?? '/').split('?', 1)[0],
    [attr.endpoint]: `${params.namespace}/${params.endpoint}`,
  });
}

/** A 5xx is the receiver's failure; a 4xx is the sender's, recorded by its outcome without an error status. */
export function endRequestSpan(
  span: TraceSpan,
  status: number,
  outcome: Outcome | undefined,
  event: { eventType: string; id: string } | undefined,
): void {
  span.set({
    [attr.httpStatus]: status,
    [attr.outcome]: outcome,
    [attr.eventType]: event?.eventType,
    [attr.eventId]: event?.id,
    [attr.errorType]: status >= 400 ? String(status) : undefined,
  });
  span.end(status >= 500 ? (outcome ?? String(status)) : undefined);
}

const first = (value: string | string[] | undefined) => (Array.isArray(value) ? value.join(',') : value);
