// Certificates for the TLS tests, made with the machine's openssl: a CA, a server certificate for 127.0.0.1 signed
// by it, client certificates signed by it and by a second, unrelated CA.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Pki {
  ca: Buffer;
  otherCa: Buffer;
  server: { cert: Buffer; key: Buffer };
  client: { cert: Buffer; key: Buffer };
  /** A client certificate with the same name, signed by the other CA. */
  strangerClient: { cert: Buffer; key: Buffer };
}

export function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'hookyard-pki-'));
  const at = (f: string) => join(dir, f);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  try {
    for (const ca of ['ca', 'other-ca']) {
      openssl('req', '-x509', ...key, '-keyout', `${ca}.key`, '-out', `${ca}.crt`, '-days', '2', '-subj', `/CN=${ca}`);
    }
    const issue = (name: string, cn: string, ca: string, extensions: string) => {
      writeFileSync(at(`${name}.ext`), `${extensions}\n`);
      openssl('req', '-new', ...key, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
      openssl(
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        `${ca}.crt`,
        '-CAkey',
        `${ca}.key`,
        '-CAcreateserial',
        '-out',
        `${name}.crt`,
        '-days',
        '2',
        '-extfile',
        `${name}.ext`,
      );
      return { cert: readFileSync(at(`${name}.crt`)), key: readFileSync(at(`${name}.key`)) };
    };
    const server = issue('server', 'localhost', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost');
    const client = issue('client', 'hookyard-dispatcher', 'ca', 'extendedKeyUsage=clientAuth');
    const strangerClient = issue('stranger', 'hookyard-dispatcher', 'other-ca', 'extendedKeyUsage=clientAuth');
    return {
      ca: readFileSync(at('ca.crt')),
      otherCa: readFileSync(at('other-ca.crt')),
      server,
      client,
      strangerClient,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
