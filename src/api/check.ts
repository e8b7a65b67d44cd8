// Checking a manifest against one kind's schema: its defaults applied, and every wrong field named the way the API
// server names it (`spec.target.timeout: ...`). Apart from validate.ts, which knows both kinds, so that a role that
// reads one kind (the receiver) loads only that kind's schema.
import type { z } from 'zod';
import { apiVersion } from './common.ts';
import { withoutRules } from './rules.ts';

export class InvalidResource extends Error {
  override name = 'InvalidResource';
  readonly problems: string[];
  constructor(resource: string, problems: string[]) {
    super(`${resource} is invalid: ${problems.join('; ')}`);
    this.problems = problems;
  }
}

/** `kind/name` of a manifest, for messages, whatever it holds. */
export function resourceName(manifest: unknown): string {
  const m = manifest as { kind?: unknown; metadata?: { name?: unknown } } | undefined;
  return `${String(m?.kind ?? 'resource')}/${String(m?.metadata?.name ?? '')}`;
}

/**
 * Checks a manifest of the given kind with its schema, applying its defaults. With `rules: false` the CEL rules
 * are left out (see withoutRules); otherwise they need rules-cel.ts loaded, as validate.ts does.
 */
export function checkResource<T>(
  schema: z.ZodType<T>,
  kind: string,
  manifest: unknown,
  options: { rules?: boolean } = {},
): T {
  const m = manifest as { apiVersion?: unknown; kind?: unknown } | undefined;
  if (m?.apiVersion !== apiVersion || m.kind !== kind) {
    throw new InvalidResource(resourceName(manifest), [`apiVersion and kind must be ${apiVersion} ${kind}`]);
  }
  const parse = () => schema.safeParse(manifest);
  const result = options.rules === false ? withoutRules(parse) : parse();
  if (!result.success) throw new InvalidResource(resourceName(manifest), result.error.issues.map(describeIssue));
  return result.data;
}

export function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path
    .map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`))
    .join('');
  return path ? `${path}: ${issue.message}` : issue.message;
}
