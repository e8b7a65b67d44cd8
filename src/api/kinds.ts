// Every kind Hookyard reads or writes, with the group, version and plural its API paths are made of: the one place
// the operator, the CRD generator, the status writers and the tests take them from.
import { group, version } from './common.ts';

export interface KindRef {
  kind: string;
  /** `group/version`, or `v1` for the core group. */
  apiVersion: string;
  group: string;
  version: string;
  plural: string;
}

const ref = (kind: string, groupName: string, versionName: string, plural: string): KindRef => ({
  kind,
  apiVersion: groupName ? `${groupName}/${versionName}` : versionName,
  group: groupName,
  version: versionName,
  plural,
});

export const kinds = {
  ProviderEndpoint: ref('ProviderEndpoint', group, version, 'providerendpoints'),
  WebhookSubscription: ref('WebhookSubscription', group, version, 'webhooksubscriptions'),
  ConfigMap: ref('ConfigMap', '', 'v1', 'configmaps'),
  Secret: ref('Secret', '', 'v1', 'secrets'),
  Service: ref('Service', '', 'v1', 'services'),
  Deployment: ref('Deployment', 'apps', 'v1', 'deployments'),
  Ingress: ref('Ingress', 'networking.k8s.io', 'v1', 'ingresses'),
} as const satisfies Record<string, KindRef>;

/** The two kinds of Hookyard's own resources. */
export const resourceKinds = ['ProviderEndpoint', 'WebhookSubscription'] as const;
export type ResourceKind = (typeof resourceKinds)[number];

/** The API path of a kind's collection, in one namespace or (namespace '') in all of them. */
export function collectionPath(k: KindRef, namespace: string): string {
  const prefix = k.group ? `/apis/${k.apiVersion}` : `/api/${k.version}`;
  return `${prefix}${namespace ? `/namespaces/${namespace}` : ''}/${k.plural}`;
}
