// Reading the resources dev mode runs: ProviderEndpoints, WebhookSubscriptions and Secrets from YAML files,
// checked with the same schemas (and so the same messages) as the API server's admission.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { ProviderEndpoint } from '../api/provider-endpoint.ts';
import { resolveSources } from '../api/sources.ts';
import { InvalidResource, parseResource } from '../api/validate.ts';
import type { WebhookSubscription } from '../api/webhook-subscription.ts';
import { mapSecrets, type SecretStore } from '../runtime/secrets.ts';

export interface Manifests {
  endpoints: ProviderEndpoint[];
  subscriptions: WebhookSubscription[];
  secrets: SecretStore;
  /** ConfigMaps' keys (a CA bundle), read like the Secrets. */
  configMaps: SecretStore;
  files: string[];
}

export class InvalidManifests extends Error {
  override name = 'InvalidManifests';
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`refusing to start; fix these first:\n  ${problems.join('\n  ')}`);
    this.problems = problems;
  }
}

/**
 * Every Secret key a spec refers to (`secretRefs` lists, `secretKeyRef`s, a client certificate's tls.crt and tls.key),
 * with where it is referred to.
 */
function secretReferences(value: unknown, path: string): { path: string; name: string; key: string }[] {
  if (Array.isArray(value)) return value.flatMap((v, i) => secretReferences(v, `${path}[${i}]`));
  if (!value || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([field, v]) => {
    const at = `${path}.${field}`;
    if (field === 'secretRefs' && Array.isArray(v)) return v.map((ref, i) => ({ path: `${at}[${i}]`, ...ref }));
    if (field === 'secretKeyRef') return [{ path: at, ...(v as { name: string; key: string }) }];
    const tlsSecret = field === 'clientCertificate' && (v as { secretName?: string } | undefined)?.secretName;
    if (tlsSecret) return ['tls.crt', 'tls.key'].map((key) => ({ path: `${at}.secretName`, name: tlsSecret, key }));
    return secretReferences(v, at);
  });
}

/** The YAML files of a file or a folder (not recursive). */
export function yamlFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()
    .map((f) => join(path, f));
}

/**
 * Reads every document; all problems of all files are collected and thrown together, so nothing starts half-way.
 * Resources without a namespace go to `defaultNamespace`.
 */
export function readManifests(paths: string[], defaultNamespace = 'default'): Manifests {
  const problems: string[] = [];
  const endpoints: ProviderEndpoint[] = [];
  const subscriptions: WebhookSubscription[] = [];
  const secrets: Record<string, Record<string, Buffer>> = {};
  const configMaps: Record<string, Record<string, Buffer>> = {};
  const files = paths.flatMap(yamlFiles);
  for (const file of files) {
    for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
      if (doc.errors.length > 0) {
        problems.push(`${file}: not valid YAML: ${doc.errors[0]?.message}`);
        continue;
      }
      const value = doc.toJS() as { kind?: string; metadata?: { name?: string; namespace?: string } } | null;
      if (!value) continue;
      if (value.metadata && !value.metadata.namespace) value.metadata.namespace = defaultNamespace;
      if (value.kind === 'Secret') {
        const secret = value as {
          metadata: { name: string };
          data?: Record<string, string>;
          stringData?: Record<string, string>;
        };
        secrets[secret.metadata.name] = {
          ...Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
          ...Object.fromEntries(Object.entries(secret.stringData ?? {}).map(([k, v]) => [k, Buffer.from(v)])),
        };
        continue;
      }
      if (value.kind === 'ConfigMap') {
        const configMap = value as {
          metadata: { name: string };
          data?: Record<string, string>;
          binaryData?: Record<string, string>;
        };
        configMaps[configMap.metadata.name] = {
          ...Object.fromEntries(Object.entries(configMap.data ?? {}).map(([k, v]) => [k, Buffer.from(v)])),
          ...Object.fromEntries(
            Object.entries(configMap.binaryData ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]),
          ),
        };
        continue;
      }
      try {
        const resource = parseResource(value);
        if (resource.kind === 'ProviderEndpoint') endpoints.push(resource);
        else subscriptions.push(resource);
      } catch (err) {
        if (!(err instanceof InvalidResource)) throw err;
        problems.push(`${file}: ${err.message}`);
      }
    }
  }
  for (const resource of [...endpoints, ...subscriptions]) {
    for (const { path, name, key } of secretReferences(resource.spec, 'spec')) {
      if (secrets[name]?.[key] === undefined) {
        problems.push(
          `${resource.kind}/${resource.metadata.name}: ${path} names key "${key}" of Secret "${name}", which ` +
            `${secrets[name] ? 'has no such key' : 'no file defines'}; add a Secret ${name} with stringData: {${key}: ...}`,
        );
      }
    }
  }
  for (const sub of subscriptions) {
    if (resolveSources(sub, endpoints).length === 0) {
      problems.push(`WebhookSubscription/${sub.metadata.name}: no ProviderEndpoint matches its sources`);
    }
  }
  if (problems.length > 0) throw new InvalidManifests(problems);
  return { endpoints, subscriptions, secrets: mapSecrets(secrets), configMaps: mapSecrets(configMaps), files };
}
