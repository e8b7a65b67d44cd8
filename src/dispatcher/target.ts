// Sending one request to the target: a keep-alive pool per target, a deadline per attempt, response bodies read
// up to a cap, link-local / cloud metadata addresses refused unless the subscription allows them, and the
// subscription's TLS (a client certificate, a private CA) on every connection.
import { X509Certificate } from 'node:crypto';
import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions, type LookupOneOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { createSecureContext } from 'node:tls';
import { type Dispatcher, Pool } from 'undici';
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { resolveSecrets, type SecretStore } from '../runtime/secrets.ts';
import { type AttemptResult, parseRetryAfter } from './outcome.ts';

type TargetSpec = WebhookSubscriptionSpec['target'];

/** What target.tls adds to each connection, as node:tls takes it. */
export interface TlsOptions {
  cert?: Buffer;
  key?: Buffer;
  /** Replaces the public roots: the target's certificate must chain to one of these. */
  ca?: Buffer;
}

/** target.tls material that TLS cannot use (not PEM, a key that does not match its certificate). */
export class InvalidTlsMaterial extends Error {
  override name = 'InvalidTlsMaterial';
}

/**
 * target.tls read from the mounted Secrets and ConfigMaps: the client certificate's tls.crt and tls.key, the CA
 * bundle's key. A missing key throws MissingSecret, material TLS cannot use InvalidTlsMaterial (each naming the
 * object and key, never a value), which stops the start: otherwise every connection would fail and every event
 * would end as a dead letter.
 */
export function targetTlsOptions(
  tls: TargetSpec['tls'],
  secrets: SecretStore,
  configMaps: SecretStore,
): TlsOptions | undefined {
  if (!tls?.clientCertificate && !tls?.caBundle) return undefined;
  const options: TlsOptions = {};
  const client = tls.clientCertificate?.secretName;
  if (client) {
    [options.cert, options.key] = resolveSecrets(secrets, [
      { name: client, key: 'tls.crt' },
      { name: client, key: 'tls.key' },
    ]);
  }
  const { secretKeyRef, configMapKeyRef } = tls.caBundle ?? {};
  if (secretKeyRef) [options.ca] = resolveSecrets(secrets, [secretKeyRef]);
  if (configMapKeyRef) [options.ca] = resolveSecrets(configMaps, [configMapKeyRef], 'ConfigMap');
  try {
    checkUsable(options);
  } catch (err) {
    const sources = [
      client && `Secret "${client}" (tls.crt, tls.key)`,
      secretKeyRef && `Secret "${secretKeyRef.name}" (${secretKeyRef.key})`,
      configMapKeyRef && `ConfigMap "${configMapKeyRef.name}" (${configMapKeyRef.key})`,
    ].filter(Boolean);
    // OpenSSL's reason (such as "no start line" or "key values mismatch") says what is wrong without the bytes.
    const reason = (err as { reason?: string }).reason ?? (err as Error).message;
    throw new InvalidTlsMaterial(`target.tls: ${sources.join(' and ')} cannot be used for TLS: ${reason}`);
  }
  return options;
}

/** Throws OpenSSL's error for a certificate, key or CA bundle a connection could not use. */
function checkUsable(options: TlsOptions): void {
  createSecureContext(options); // the client certificate and its key: parsed, and matching each other
  if (!options.ca) return;
  // createSecureContext skips what is not a certificate in a CA bundle: check each one.
  const certificates = options.ca
    .toString('latin1')
    .match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!certificates) throw new Error('no PEM certificate in the CA bundle');
  for (const pem of certificates) new X509Certificate(pem);
}

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
  tls?: TlsOptions;
}

export class Target {
  readonly url: URL;
  readonly #pool: Pool;
  readonly #options: TargetOptions;
  readonly #forbidden: boolean;
  readonly #path: string;
  readonly #active = new Set<Attempt>();
  #sweep: NodeJS.Timeout | undefined;

  constructor(options: TargetOptions) {
    this.#options = options;
    this.url = new URL(options.url);
    const host = this.url.hostname.replace(/^\[|\]$/g, '');
    this.#forbidden = !options.allowPrivateAddresses && isBlockedAddress(host);
    this.#path = this.url.pathname + this.url.search;
    // undici's own timeouts bound each wait (connect, headers, each pause inside the body); the attempt's one
    // deadline over all of them together is #track's.
    this.#pool = new Pool(this.url.origin, {
      connections: options.connections,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connect: {
        ...options.tls,
        timeout: options.timeoutMs,
        lookup: (options.allowPrivateAddresses
          ? options.lookup
          : guardedLookup(options.lookup ?? (dnsLookup as Lookup))) as never,
      },
    });
  }

  /** Never rejects: what became of the attempt is the result. */
  send(request: SendRequest): Promise<AttemptResult> {
    if (this.#forbidden) {
      return Promise.resolve({
        kind: 'TargetForbidden',
        error: `${this.url.hostname} is a link-local or metadata address`,
      });
    }
    const attempt = new Attempt(
      performance.now() + this.#options.timeoutMs,
      this.#options.maxResponseBytes ?? 64 * 1024,
      this.#settled,
    );
    this.#track(attempt);
    try {
      this.#pool.dispatch(
        { path: this.#path, method: request.method as 'POST', headers: request.headers, body: request.body },
        attempt,
      );
    } catch (err) {
      attempt.fail(err as Error);
    }
    return attempt.result;
  }

  /** What an attempt came to, once it settled (no async function around it: one promise per attempt, not three). */
  readonly #settled = (attempt: Attempt, outcome: { status: number; retryAfter?: string } | Error): AttemptResult => {
    this.#active.delete(attempt);
    if (!(outcome instanceof Error)) {
      return { kind: 'Response', status: outcome.status, retryAfterMs: parseRetryAfter(outcome.retryAfter) };
    }
    const code = errorCode(outcome);
    if (code === 'EHOOKYARD_FORBIDDEN_ADDRESS') return { kind: 'TargetForbidden', error: outcome.message };
    if (code && timeoutCodes.has(code)) {
      return { kind: 'TargetTimeout', error: `no response within ${this.#options.timeoutMs}ms (${code})` };
    }
    return { kind: 'TargetUnreachable', error: code ?? outcome.message };
  };

  /**
   * One deadline per attempt, over connecting, sending, the headers and the body together. One sweep per target
   * ends the attempts past theirs, every tenth of the timeout (at most every second): a timer and an abort signal
   * per request cost about a tenth of the dispatcher's CPU per delivery.
   */
  #track(attempt: Attempt) {
    this.#active.add(attempt);
    if (this.#sweep) return;
    const every = Math.min(1000, Math.max(10, Math.floor(this.#options.timeoutMs / 10)));
    this.#sweep = setInterval(() => {
      const now = performance.now();
      for (const a of this.#active) if (a.deadline <= now) a.expire();
      if (this.#active.size === 0) {
        clearInterval(this.#sweep);
        this.#sweep = undefined;
      }
    }, every);
    this.#sweep.unref();
  }

  close(): Promise<void> {
    return this.#pool.close();
  }
}

class DeadlineExceeded extends Error {
  code = 'EHOOKYARD_DEADLINE';
}

/** Ends reading a response body past the cap: the status is known, the rest is not worth reading. */
class BodyCapReached extends Error {}

type Settled = (attempt: Attempt, outcome: { status: number; retryAfter?: string } | Error) => AttemptResult;

/**
 * One request as an undici dispatch handler: the status and Retry-After from the response head, the body counted
 * and dropped (the connection closed rather than read past `maxBytes`), and `expire()` for the deadline sweep.
 * `result` resolves once, with what `settled` makes of the response or the error.
 */
class Attempt implements Dispatcher.DispatchHandler {
  readonly deadline: number;
  readonly result: Promise<AttemptResult>;
  readonly #maxBytes: number;
  readonly #settled: Settled;
  #controller: Dispatcher.DispatchController | undefined;
  #status = 0;
  #retryAfter: string | undefined;
  #bytes = 0;
  #done = false;
  #resolve!: (result: AttemptResult) => void;

  constructor(deadline: number, maxBytes: number, settled: Settled) {
    this.deadline = deadline;
    this.#maxBytes = maxBytes;
    this.#settled = settled;
    this.result = new Promise((ok) => (this.#resolve = ok));
  }

  expire() {
    const error = new DeadlineExceeded();
    if (this.#controller) this.#controller.abort(error);
    this.fail(error); // also when still queued for a connection: it is aborted once it starts
  }

  fail(error: Error) {
    this.#settle(error);
  }

  onRequestStart(controller: Dispatcher.DispatchController) {
    this.#controller = controller;
    if (this.deadline <= performance.now()) controller.abort(new DeadlineExceeded());
  }

  onResponseStart(_c: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[]>) {
    this.#status = status;
    const retryAfter = headers['retry-after'];
    this.#retryAfter = Array.isArray(retryAfter) ? retryAfter[0] : retryAfter;
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer) {
    this.#bytes += chunk.length;
    if (this.#bytes > this.#maxBytes) controller.abort(new BodyCapReached());
  }

  onResponseEnd() {
    this.#settle(undefined);
  }

  onResponseError(_c: Dispatcher.DispatchController, error: Error) {
    this.#settle(error instanceof BodyCapReached ? undefined : error);
  }

  #settle(error: Error | undefined) {
    if (this.#done) return;
    this.#done = true;
    this.#resolve(this.#settled(this, error ?? { status: this.#status, retryAfter: this.#retryAfter }));
  }
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
