// The verification methods of a ProviderEndpoint, compiled once per config with their secrets. Each one fails
// closed: anything missing, malformed or unequal refuses the request.
import { createSecretKey } from 'node:crypto';
import { BlockList, isIP, isIPv6 } from 'node:net';
import type { HmacVerification, Verification } from '../api/provider-endpoint.ts';
import { readPath } from '../payload/parse.ts';
import type { Preset } from '../providers/presets.ts';
import { durationMs } from '../runtime/duration.ts';
import { resolveSecrets, type SecretStore, withoutNewline } from '../runtime/secrets.ts';
import { decodeSignature, hmac, signatureEquals, timestampWithin } from '../signatures/hmac.ts';
import { standardWebhookKey, verifyStandardWebhook } from '../signatures/standard-webhooks.ts';
import { verifyStripe } from '../signatures/stripe.ts';
import { Refused } from './errors.ts';

/** What verification reads of a request. */
export interface RequestView {
  /** Lower-case names. */
  headers: Record<string, string | undefined>;
  query: URLSearchParams;
  /** The exact bytes received. */
  body: Buffer;
  remoteAddress: string;
  /** The parsed body (throws Refused invalid_payload when it cannot be read). */
  parsed(): Promise<unknown>;
}

/** Resolves when the request passes; throws Refused otherwise. */
export type Verifier = (request: RequestView) => Promise<void> | void;

const nowSeconds = () => Math.floor(Date.now() / 1000);

export function compileVerifier(entry: Verification, preset: Preset, secrets: SecretStore): Verifier {
  if (entry.none) return () => {};
  if (entry.hmac)
    return hmacVerifier({ ...preset.hmac, ...definedOnly(entry.hmac), secretRefs: entry.hmac.secretRefs }, secrets);
  if (entry.standardWebhooks) {
    const keys = resolveSecrets(secrets, entry.standardWebhooks.secretRefs).map((s) =>
      standardWebhookKey(s.toString()),
    );
    const tolerance = durationMs(entry.standardWebhooks.tolerance) / 1000;
    return (r) => {
      const headers = {
        id: r.headers['webhook-id'],
        timestamp: r.headers['webhook-timestamp'],
        signature: r.headers['webhook-signature'],
      };
      const result = verifyStandardWebhook(keys, headers, r.body, tolerance);
      if (!result.ok) throw new Refused('bad_signature', result.reason);
    };
  }
  if (entry.stripe) {
    const keys = resolveSecrets(secrets, entry.stripe.secretRefs).map((s) => Buffer.from(s.toString().trim()));
    const tolerance = durationMs(entry.stripe.tolerance) / 1000;
    return (r) => {
      const result = verifyStripe(keys, r.headers['stripe-signature'], r.body, tolerance);
      if (!result.ok) throw new Refused('bad_signature', result.reason);
    };
  }
  if (entry.basicAuth) {
    const pairs = entry.basicAuth.secretNames.map((name) =>
      resolveSecrets(secrets, [
        { name, key: 'username' },
        { name, key: 'password' },
      ]).join(':'),
    );
    return (r) => {
      const match = /^Basic\s+(\S+)$/i.exec(r.headers.authorization ?? '');
      const given = match ? Buffer.from(match[1] as string, 'base64').toString() : '';
      if (!anyEqual(pairs, given)) throw new Refused('unauthorized', 'missing or wrong Basic credentials');
    };
  }
  if (entry.bearer) {
    const tokens = tokensOf(secrets, entry.bearer.secretRefs);
    return (r) => {
      const given = /^Bearer\s+(\S+)$/i.exec(r.headers.authorization ?? '')?.[1] ?? '';
      if (!anyEqual(tokens, given)) throw new Refused('unauthorized', 'missing or wrong bearer token');
    };
  }
  if (entry.headerToken) {
    const { header } = entry.headerToken;
    const tokens = tokensOf(secrets, entry.headerToken.secretRefs);
    return (r) => {
      if (!anyEqual(tokens, r.headers[header.toLowerCase()] ?? '')) {
        throw new Refused('unauthorized', `missing or wrong ${header} header`);
      }
    };
  }
  if (entry.queryToken) {
    const { parameter } = entry.queryToken;
    const tokens = tokensOf(secrets, entry.queryToken.secretRefs);
    return (r) => {
      if (!anyEqual(tokens, r.query.get(parameter) ?? '')) {
        throw new Refused('unauthorized', `missing or wrong "${parameter}" query parameter`);
      }
    };
  }
  if (entry.sourceCIDRs) return sourceVerifier(entry.sourceCIDRs.cidrs, entry.sourceCIDRs.trustedProxies);
  throw new Error('verification entry sets no method');
}

function hmacVerifier(spec: Omit<HmacVerification, 'secret'>, secrets: SecretStore): Verifier {
  const { header, algorithm = 'sha256', encoding = 'hex', prefix = '', signedContent = 'body' } = spec;
  if (!header) throw new Error('hmac verification needs a header (the provider preset has none)');
  // Key objects made once: building one from bytes on every request shows up in profiles.
  const keys = resolveSecrets(secrets, spec.secretRefs).map((secret) => createSecretKey(withoutNewline(secret)));
  const toleranceSeconds = durationMs(spec.tolerance ?? '5m') / 1000;
  const name = header.toLowerCase();
  return async (r) => {
    const value = r.headers[name]?.trim();
    if (!value) throw new Refused('bad_signature', `missing ${header} header`);
    if (!value.startsWith(prefix)) throw new Refused('bad_signature', `${header} does not start with "${prefix}"`);
    const received = decodeSignature(value.slice(prefix.length), encoding);
    if (!received) throw new Refused('bad_signature', `${header} is not ${encoding}`);
    if (spec.timestampHeader) {
      if (!timestampWithin(r.headers[spec.timestampHeader.toLowerCase()], toleranceSeconds, nowSeconds())) {
        throw new Refused('bad_signature', `${spec.timestampHeader} is missing or outside the tolerance`);
      }
    }
    const content = await signedBytes(signedContent, spec, r);
    if (!keys.some((key) => signatureEquals(received, hmac(algorithm, key, content)))) {
      throw new Refused('bad_signature', `${header} does not match`);
    }
  };
}

/** The bytes the sender signed. */
async function signedBytes(
  kind: NonNullable<HmacVerification['signedContent']>,
  spec: Omit<HmacVerification, 'secret'>,
  r: RequestView,
): Promise<Buffer> {
  switch (kind) {
    case 'body':
      return r.body;
    case 'json':
      // What JSON.stringify(req.body) gives after a JSON body parser: the senders' own snippets sign this.
      return Buffer.from(JSON.stringify(await r.parsed()));
    case 'jsonField': {
      const body = await r.parsed();
      const path = (spec.jsonPaths ?? []).find((p) => readPath(body, p) !== undefined);
      if (!path) throw new Refused('bad_signature', `body has none of the signed fields ${spec.jsonPaths?.join(', ')}`);
      return Buffer.from(JSON.stringify(readPath(body, path)));
    }
    case 'template': {
      const parts = (spec.template ?? '{body}').split(/(\{body\}|\{timestamp\}|\{header:[^}]+\})/);
      return Buffer.concat(
        parts.map((part) => {
          if (part === '{body}') return r.body;
          if (part === '{timestamp}') return Buffer.from(r.headers[spec.timestampHeader?.toLowerCase() ?? ''] ?? '');
          const header = /^\{header:([^}]+)\}$/.exec(part)?.[1];
          return Buffer.from(header ? (r.headers[header.toLowerCase()] ?? '') : part);
        }),
      );
    }
  }
}

function sourceVerifier(cidrs: string[], trustedProxies: number): Verifier {
  const allowed = new BlockList();
  for (const cidr of cidrs) {
    const [address, bits] = cidr.split('/') as [string, string];
    allowed.addSubnet(address, Number(bits), isIPv6(address) ? 'ipv6' : 'ipv4');
  }
  return (r) => {
    // Behind N trusted proxies the sender is the N-th address from the right of X-Forwarded-For.
    const forwarded = (r.headers['x-forwarded-for'] ?? '')
      .split(',')
      .map((a) => a.trim())
      .filter(Boolean);
    const source = trustedProxies === 0 ? r.remoteAddress : forwarded[forwarded.length - trustedProxies];
    const address = source?.replace(/^::ffff:/, '');
    if (!address || !isIP(address) || !allowed.check(address, isIPv6(address) ? 'ipv6' : 'ipv4')) {
      throw new Refused('forbidden', 'requests from this address are not accepted');
    }
  };
}

function tokensOf(secrets: SecretStore, refs: Parameters<typeof resolveSecrets>[1]): string[] {
  return resolveSecrets(secrets, refs).map((s) => s.toString().trim());
}

function anyEqual(expected: string[], given: string): boolean {
  let found = false;
  for (const value of expected) found = signatureEquals(given, value) || found;
  return found;
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
