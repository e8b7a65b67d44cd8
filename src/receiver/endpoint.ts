// A ProviderEndpoint compiled for serving: its spec merged over its provider preset, secrets resolved, and the
// rules that turn a request into an event type and a dedup key.
import { createHash } from 'node:crypto';
import type { ProviderEndpoint } from '../api/provider-endpoint.ts';
import { readPath } from '../payload/parse.ts';
import { type Preset, presets } from '../providers/presets.ts';
import type { SecretStore } from '../runtime/secrets.ts';
import { Refused } from './errors.ts';
import { compileVerifier, type RequestView, type Verifier } from './verify.ts';

export interface CompiledEndpoint {
  namespace: string;
  name: string;
  provider: string;
  status: number;
  /** A provider's check of the URL, answered 200 unpublished: the header, and the signature headers it lacks. */
  registrationCheck?: { header: string; value: string; unsigned: string[] };
  /** Sub-routes and their event types; undefined when the endpoint has none (only its root path). */
  routes?: Map<string, string>;
  eventType: Preset['eventType'];
  dedup: Preset['dedup'];
  fallbackContentType?: 'json' | 'form' | 'xml';
  retryHeader?: string;
  deliveryHeader?: string;
  maxBodyBytes: number;
  verifiers: Verifier[];
  /** Lower-case names of headers that carry a token: never stored with the event. */
  tokenHeaders: Set<string>;
  /** The resource as configured, to tell whether a reload changed anything. */
  generation: string;
}

export function compileEndpoint(resource: ProviderEndpoint, secrets: SecretStore): CompiledEndpoint {
  const { spec, metadata } = resource;
  const preset = presets[spec.provider];
  const routes = spec.routes ?? preset.routes;
  const check = spec.response?.registrationCheck ?? preset.registrationCheck;
  return {
    namespace: metadata.namespace ?? 'default',
    name: metadata.name,
    provider: spec.provider,
    status: spec.response?.status ?? preset.status,
    registrationCheck: check && { ...check, unsigned: signatureHeaders(spec, preset) },
    routes: routes && new Map(routes.map((r) => [r.path, r.eventType ?? r.path])),
    eventType: {
      ...preset.eventType,
      ...spec.eventType,
      aliases: { ...preset.eventType.aliases, ...spec.eventType?.aliases },
    },
    dedup: { ...preset.dedup, ...spec.dedup },
    fallbackContentType: spec.payload?.fallbackContentType ?? preset.fallbackContentType,
    retryHeader: preset.retryHeader,
    deliveryHeader: preset.deliveryHeader,
    maxBodyBytes: bytesOf(spec.receiver.maxBodySize),
    verifiers: spec.verification.map((entry) => compileVerifier(entry, preset, secrets)),
    tokenHeaders: new Set(
      spec.verification.flatMap((v) => (v.headerToken ? [v.headerToken.header.toLowerCase()] : [])),
    ),
    generation: JSON.stringify(spec),
  };
}

/**
 * The lower-case headers that carry an endpoint's signatures. A registration check is a request without any of
 * them (Shopflix: its test User-Agent and no X-Data-Signature); one that carries a signature is an event.
 */
function signatureHeaders(spec: ProviderEndpoint['spec'], preset: Preset): string[] {
  const names = spec.verification.flatMap((v) => {
    if (v.hmac) return [v.hmac.header ?? preset.hmac?.header];
    if (v.standardWebhooks) return ['webhook-signature'];
    if (v.stripe) return ['stripe-signature'];
    return [];
  });
  return names.flatMap((name) => (name ? [name.toLowerCase()] : []));
}

/** Whether a request is the provider's registration check rather than an event. */
export function isRegistrationCheck(endpoint: CompiledEndpoint, headers: RequestView['headers']): boolean {
  const check = endpoint.registrationCheck;
  if (!check || headers[check.header.toLowerCase()] !== check.value) return false;
  return check.unsigned.every((name) => headers[name] === undefined);
}

function bytesOf(size: string): number {
  const [, n, unit] = /^(\d+)(Ki|Mi)?$/.exec(size) ?? [];
  return Number(n) * (unit === 'Mi' ? 1 << 20 : unit === 'Ki' ? 1 << 10 : 1);
}

/** The event type of a request: from its route, a header, the body or a constant, then aliased. */
export async function eventTypeOf(
  endpoint: CompiledEndpoint,
  route: string | undefined,
  r: RequestView,
): Promise<string> {
  const rule = endpoint.eventType;
  let type: string | undefined;
  switch (rule.source) {
    case 'route':
      type = route === undefined ? undefined : endpoint.routes?.get(route);
      break;
    case 'header':
      type = r.headers[rule.header?.toLowerCase() ?? ''];
      break;
    case 'body': {
      const body = await r.parsed();
      type = firstString(body, rule.bodyPaths ?? []);
      break;
    }
    case 'constant':
      type = rule.value;
      break;
  }
  if (route !== undefined && rule.source !== 'route' && !type) type = endpoint.routes?.get(route);
  if (!type) throw new Refused('invalid_payload', `no event type: expected it in ${describeSource(rule)}`);
  // The type becomes NATS subject tokens and a metric label: keep it to what event names look like.
  if (type.length > 128 || type.split('.').length > 16) {
    throw new Refused('invalid_payload', 'event type is longer than 128 characters or 16 dot-separated parts');
  }
  return rule.aliases && Object.hasOwn(rule.aliases, type) ? (rule.aliases[type] as string) : type;
}

/**
 * The dedup key: the event type, then a header, body fields joined with ":" (each field may list alternatives
 * as "a|b"), or the SHA-256 of the raw body. The type comes first so that two event types never share a key
 * (printIQ sends the same bytes for CreateJob and AcceptanceCreated). When a configured field is missing, the
 * body hash is used instead, and a key longer than 200 characters is hashed, so distinct events are never merged.
 */
export async function dedupKeyOf(endpoint: CompiledEndpoint, r: RequestView, eventType: string): Promise<string> {
  const rule = endpoint.dedup;
  let key: string | undefined;
  if (rule.source === 'header') key = r.headers[rule.header?.toLowerCase() ?? ''];
  if (rule.source === 'body') {
    const body = await r.parsed();
    const parts = (rule.bodyPaths ?? []).map((field) => firstString(body, field.split('|')));
    if (parts.length > 0 && parts.every((p) => p !== undefined)) key = parts.join(':');
  }
  if (!key) key = `sha256:${sha256(r.body)}`;
  else if (key.length > 200) key = `sha256:${sha256(Buffer.from(key))}`;
  return `${dedupKeyPrefix(eventType)}${key}`;
}

/** What every dedup key of an event type starts with: the type escaped so that its first ":" ends it ("a:b" + "c"
 * and "a" + "b:c" stay apart). */
export const dedupKeyPrefix = (eventType: string) => `${eventType.replaceAll('%', '%25').replaceAll(':', '%3A')}:`;

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

function firstString(body: unknown, paths: string[]): string | undefined {
  for (const path of paths) {
    const value = readPath(body, path);
    if (typeof value === 'string' && value !== '') return value;
    if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  }
  return undefined;
}

function describeSource(rule: Preset['eventType']): string {
  if (rule.source === 'header') return `the ${rule.header} header`;
  if (rule.source === 'body') return `the body field ${rule.bodyPaths?.join(' or ')}`;
  return 'the route';
}
