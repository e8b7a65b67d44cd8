// Which event types a subscription's sources can produce, where the endpoint's spec says so ahead of any request:
// a route or a constant names them (printIQ, FotoWeb, Site Flow, generic), while a header or a body field (GitHub,
// PROIGN, Stripe, ...) can carry any. The merge of preset and spec is the receiver's (src/receiver/endpoint.ts).
import type { ProviderEndpointSpec } from '../api/provider-endpoint.ts';
import type { Source } from '../api/sources.ts';
import { subjectMatches } from '../jetstream/consumers.ts';
import { eventFilterSubject, eventSubject } from '../jetstream/layout.ts';
import { presets } from '../providers/presets.ts';

/** The event types an endpoint can produce, aliases applied; undefined when the request decides. */
export function producedEventTypes(spec: ProviderEndpointSpec): string[] | undefined {
  const preset = presets[spec.provider];
  const rule = { ...preset.eventType, ...spec.eventType };
  const aliases: Record<string, string> = { ...preset.eventType.aliases, ...spec.eventType?.aliases };
  const alias = (type: string) => (Object.hasOwn(aliases, type) ? (aliases[type] as string) : type);
  if (rule.source === 'constant') return rule.value === undefined ? undefined : [alias(rule.value)];
  if (rule.source === 'route') return (spec.routes ?? preset.routes ?? []).map((r) => alias(r.eventType ?? r.path));
  return undefined;
}

export interface EventTypeMatch {
  /** Whether some event a source can produce matches one of the patterns (true when a source's are open). */
  matches: boolean;
  /** What each source with a fixed set of types produces. */
  produced: { endpoint: string; types: string[] }[];
}

/** Whether `patterns` match anything the sources produce, matched as JetStream matches their subjects. */
export function matchEventTypes(
  patterns: string[],
  sources: (Source & { spec: ProviderEndpointSpec })[],
): EventTypeMatch {
  const produced: EventTypeMatch['produced'] = [];
  let matches = sources.length === 0;
  for (const { namespace, endpoint, spec } of sources) {
    const types = producedEventTypes(spec);
    if (types === undefined) {
      matches = true;
      continue;
    }
    produced.push({ endpoint, types });
    const subjects = types.map((t) => eventSubject(namespace, endpoint, t));
    const filters = patterns.map((p) => eventFilterSubject(namespace, endpoint, p));
    if (filters.some((f) => subjects.some((s) => subjectMatches(f, s)))) matches = true;
  }
  return { matches, produced };
}
