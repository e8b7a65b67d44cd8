import type { ProviderEndpoint } from './provider-endpoint.ts';
import type { WebhookSubscription } from './webhook-subscription.ts';

/** A ProviderEndpoint a subscription reads, resolved from spec.sources or spec.sourceSelector. */
export interface Source {
  namespace: string;
  endpoint: string;
  provider?: string;
}

/** The endpoints a subscription reads: named in spec.sources, or matched by spec.sourceSelector, same namespace. */
export function resolveSources(
  sub: Pick<WebhookSubscription, 'metadata' | 'spec'>,
  endpoints: Pick<ProviderEndpoint, 'metadata' | 'spec'>[],
): Source[] {
  const namespace = sub.metadata.namespace ?? 'default';
  const { sources, sourceSelector } = sub.spec;
  return endpoints
    .filter((e) => (e.metadata.namespace ?? 'default') === namespace)
    .filter((e) =>
      sources
        ? sources.some((s) => s.endpoint === e.metadata.name)
        : Object.entries(sourceSelector?.matchLabels ?? {}).every(([k, v]) => e.metadata.labels?.[k] === v),
    )
    .map((e) => ({ namespace, endpoint: e.metadata.name, provider: e.spec.provider }));
}
