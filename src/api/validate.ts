import type { z } from 'zod';
import { checkResource, InvalidResource, resourceName } from './check.ts';
import { apiVersion } from './common.ts';
import { type ProviderEndpoint, providerEndpoint } from './provider-endpoint.ts';
import './rules-cel.ts';
import { type WebhookSubscription, webhookSubscription } from './webhook-subscription.ts';

export { describeIssue, InvalidResource } from './check.ts';

export type Resource = ProviderEndpoint | WebhookSubscription;

export const schemas = {
  ProviderEndpoint: providerEndpoint,
  WebhookSubscription: webhookSubscription,
} as const;
export type Kind = keyof typeof schemas;

export function isHookyardKind(kind: unknown): kind is Kind {
  return typeof kind === 'string' && Object.hasOwn(schemas, kind);
}

/**
 * Checks a manifest of either kind with the schemas the CRDs are generated from, applying their defaults,
 * and names every field that is wrong the way the API server does (`spec.target.timeout: ...`).
 */
export function parseResource(manifest: unknown): Resource {
  const m = manifest as { apiVersion?: unknown; kind?: unknown };
  if (m?.apiVersion !== apiVersion || !isHookyardKind(m.kind)) {
    throw new InvalidResource(resourceName(manifest), [
      `apiVersion and kind must be ${apiVersion} ProviderEndpoint or WebhookSubscription`,
    ]);
  }
  return checkResource(schemas[m.kind] as z.ZodType<Resource>, m.kind, manifest);
}
