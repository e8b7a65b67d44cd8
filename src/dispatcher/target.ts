// Sending one request to the target: a keep-alive pool per target, a deadline per attempt, response bodies read
// up to a cap, and link-local / cloud metadata addresses refused unless the subscription allows them.
import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions, type LookupOneOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { Pool } from 'undici';
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { type AttemptResult, parseRetryAfter } from './outcome.ts';

type TargetSpec = WebhookSubscriptionSpec['target'];

/** A Service reference resolves through cluster DNS to `<scheme>://<name>.<namespace>.svc:<port><path>`. */
export function targetUrl(target: TargetSpec, namespace: string): string {
  if (target.url) return target.url;
  const s = target.service;
  if (!s) throw new Error('target sets neither url nor service');
  return `${s.scheme}://${s.name}.${namespace}.svc:${s.port}${s.path}`;
}

/** Addresses a webhook must not reach by default: link-local (cloud metadata lives there) and known metadata IPs. */
const blocked = new BlockList();
blocked.addSubnet('169.254.0.0', 16, 'ipv4');
blocked.addAddress('100.100.100.200', 'ipv4'); // Alibaba Cloud metadata
blocked.addSubnet('fe80::', 10, 'ipv6');
blocked.addAddress('fd00:ec2::254', 'ipv6'); // AWS metadata over IPv6

export function isBlockedAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
    if (mapped) return blocked.check(mapped, 'ipv4');
  }
  return blocked.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

class ForbiddenAddress extends Error {
  code = 'EHOOKYARD_FORBIDDEN_ADDRESS';
}

type Lookup = (
  hostname: string,
  options: LookupAllOptions,
  callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

/** A lookup that refuses blocked addresses, checked on every connection (so DNS rebinding does not help). */
function guardedLookup(resolve: Lookup) {
  return (
    hostname: string,
    options: LookupOneOptions | LookupAllOptions,
    callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void,
  ): void => {
    resolve(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      const bad = addresses.find((a) => isBlockedAddress(a.address));
      if (bad) return callback(new ForbiddenAddress(`${hostname} resolves to a link-local or metadata address`), []);
      if ((options as LookupAllOptions).all) return callback(null, addresses);
      const first = addresses[0] as LookupAddress;
      callback(null, first.address, first.family);
    });
  };
}

export interface SendRequest {
  method: string;
  headers: Record<string, string>;
  body: Uint8Array;
}

export interface TargetOptions {
  url: string;
  timeoutMs: number;
  connections: number;
  allowPrivateAddresses: boolean;
  /** Bytes of a response body read before the connection is closed instead (default 64 KiB). */
  maxResponseBytes?: number;
  /** Resolves the target's host name for each new connection (default dns.lookup; tests pass their own). */
  lookup?: Lookup;
}

export class Target {
  readonly url: URL;
  readonly #pool: Pool;
  readonly #options: TargetOptions;
  readonly #forbidden: boolean;
  readonly #path: string;

  constructor(options: TargetOptions) {
    this.#options = options;
    this.url = new URL(options.url);
    const host = this.url.hostname.replace(/^\[|\]$/g, '');
    this.#forbidden = !options.allowPrivateAddresses && isBlockedAddress(host);
    this.#path = this.url.pathname + this.url.search;
    // undici's own timeouts bound each wait (connect, headers, each pause inside the body); the attempt's one
    // deadline over all of them together is the abort signal in send().
    this.#pool = new Pool(this.url.origin, {
      connections: options.connections,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connect: {
        timeout: options.timeoutMs,
        lookup: (options.allowPrivateAddresses
          ? options.lookup
          : guardedLookup(options.lookup ?? (dnsLookup as Lookup))) as never,
      },
    });
  }

  async send(request: SendRequest): Promise<AttemptResult> {
    if (this.#forbidden) {
      return { kind: 'TargetForbidden', error: `${this.url.hostname} is a link-local or metadata address` };
    }
    // One deadline for the whole attempt: connecting, sending, the response headers and the response body together.
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(new DeadlineExceeded()), this.#options.timeoutMs);
    try {
      const res = await this.#pool.request({
        path: this.#path,
        method: request.method as 'POST',
        headers: request.headers,
        body: request.body,
        signal: deadline.signal,
      });
      // The body only matters for keeping the connection reusable: read (and drop) up to the cap, and close the
      // connection rather than read more.
      await res.body.dump({ limit: this.#options.maxResponseBytes ?? 64 * 1024 });
      // The deadline ends a body early without an error from dump(): the attempt timed out all the same.
      deadline.signal.throwIfAborted();
      const retryAfter = res.headers['retry-after'];
      return {
        kind: 'Response',
        status: res.statusCode,
        retryAfterMs: parseRetryAfter(Array.isArray(retryAfter) ? retryAfter[0] : retryAfter),
      };
    } catch (err) {
      const code = errorCode(err);
      if (code === 'EHOOKYARD_FORBIDDEN_ADDRESS') return { kind: 'TargetForbidden', error: (err as Error).message };
      if (code && timeoutCodes.has(code)) {
        return { kind: 'TargetTimeout', error: `no response within ${this.#options.timeoutMs}ms (${code})` };
      }
      return { kind: 'TargetUnreachable', error: code ?? (err as Error).message };
    } finally {
      clearTimeout(timer);
    }
  }

  close(): Promise<void> {
    return this.#pool.close();
  }
}

class DeadlineExceeded extends Error {
  code = 'EHOOKYARD_DEADLINE';
}

const timeoutCodes = new Set([
  'EHOOKYARD_DEADLINE',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CONNECT_TIMEOUT',
]);

function errorCode(err: unknown): string | undefined {
  let e = err as { code?: string; cause?: unknown; errors?: unknown[] } | undefined;
  for (let depth = 0; e && depth < 4; depth++) {
    if (e.code === 'EHOOKYARD_FORBIDDEN_ADDRESS') return e.code;
    if (e.code && e.code !== 'UND_ERR_SOCKET') return e.code;
    e = (e.cause ?? e.errors?.[0]) as typeof e;
  }
  return (err as { code?: string })?.code;
}
