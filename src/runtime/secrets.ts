import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { SecretKeyRef } from '../api/common.ts';

/** The Secret values a process may read, by Secret name and key. Values never leave as text in errors or logs. */
export interface SecretStore {
  get(name: string, key: string): Buffer | undefined;
}

export class MissingSecret extends Error {
  override name = 'MissingSecret';
  readonly ref: SecretKeyRef;
  constructor(ref: SecretKeyRef, kind: 'Secret' | 'ConfigMap' = 'Secret') {
    super(`${kind} "${ref.name}" has no key "${ref.key}" (or does not exist)`);
    this.ref = ref;
  }
}

export function mapSecrets(secrets: Record<string, Record<string, Buffer>>): SecretStore {
  return { get: (name, key) => secrets[name]?.[key] };
}

/**
 * Secrets mounted as files, `<dir>/<secret name>/<key>`: how the operator mounts each referenced Secret.
 * Read once; call again to reload after Kubernetes updated the files.
 */
export function directorySecrets(dir: string): SecretStore & { fingerprint: string } {
  const secrets: Record<string, Record<string, Buffer>> = {};
  for (const name of safeList(dir)) {
    const secretDir = join(dir, name);
    if (name.startsWith('..') || !statSync(secretDir).isDirectory()) continue;
    secrets[name] = {};
    for (const key of safeList(secretDir)) {
      const file = join(secretDir, key);
      if (!key.startsWith('..') && statSync(file).isFile()) secrets[name][key] = readFileSync(file);
    }
  }
  // A digest of everything read, to tell a changed Secret without keeping or logging its value.
  const hash = createHash('sha256');
  for (const [name, keys] of Object.entries(secrets).sort()) {
    for (const [key, value] of Object.entries(keys).sort()) hash.update(`${name}/${key}\0`).update(value);
  }
  return { ...mapSecrets(secrets), fingerprint: hash.digest('hex') };
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * The values of several refs, in order; throws MissingSecret for the first one that is not there. Mounted
 * ConfigMaps are read the same way (`kind` names them in the error).
 */
export function resolveSecrets(
  store: SecretStore,
  refs: SecretKeyRef[],
  kind: 'Secret' | 'ConfigMap' = 'Secret',
): Buffer[] {
  return refs.map((ref) => {
    const value = store.get(ref.name, ref.key);
    if (!value) throw new MissingSecret(ref, kind);
    return value;
  });
}

/** A secret without the trailing newline that `echo secret > file` and most editors leave; no sender signs with it. */
export function withoutNewline(secret: Buffer): Buffer {
  let end = secret.length;
  while (end > 0 && (secret[end - 1] === 0x0a || secret[end - 1] === 0x0d)) end--;
  return secret.subarray(0, end);
}
