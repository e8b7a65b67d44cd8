import type { z } from 'zod';
import { apiVersion } from './common.ts';
import { type ProviderEndpoint, providerEndpoint } from './provider-endpoint.ts';
import { type WebhookSubscription, webhookSubscription } from './webhook-subscription.ts';

export type Resource = ProviderEndpoint | WebhookSubscription;

export const schemas = {
  ProviderEndpoint: providerEndpoint,
  WebhookSubscription: webhookSubscription,
} as const;
export type Kind = keyof typeof schemas;

export class InvalidResource extends Error {
  override name = 'InvalidResource';
  readonly problems: string[];
  constructor(resource: string, problems: string[]) {
    super(`${resource} is invalid: ${problems.join('; ')}`);
    this.problems = problems;
  }
}

export function isHookyardKind(kind: unknown): kind is Kind {
  return typeof kind === 'string' && Object.hasOwn(schemas, kind);
}

/**
 * Checks a manifest of either kind with the schemas the CRDs are generated from, applying their defaults,
 * and names every field that is wrong the way the API server does (`spec.target.timeout: ...`).
 */
export function parseResource(manifest: unknown): Resource {
  const m = manifest as { apiVersion?: unknown; kind?: unknown; metadata?: { name?: unknown } };
  const name = `${String(m?.kind ?? 'resource')}/${String(m?.metadata?.name ?? '')}`;
  if (m?.apiVersion !== apiVersion || !isHookyardKind(m.kind)) {
    throw new InvalidResource(name, [
      `apiVersion and kind must be ${apiVersion} ProviderEndpoint or WebhookSubscription`,
    ]);
  }
  const result = (schemas[m.kind] as z.ZodType<Resource>).safeParse(manifest);
  if (!result.success) throw new InvalidResource(name, result.error.issues.map(describeIssue));
  return result.data;
}

export function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path
    .map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`))
    .join('');
  return path ? `${path}: ${issue.message}` : issue.message;
}
