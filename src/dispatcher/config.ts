import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { z } from 'zod';
import type { Source } from '../api/sources.ts';
import { describeIssue, parseResource } from '../api/validate.ts';
import type { WebhookSubscription } from '../api/webhook-subscription.ts';

const dnsLabel = z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a lowercase DNS label');
const sources = z
  .array(z.object({ namespace: dnsLabel, endpoint: dnsLabel, provider: z.string().optional() }))
  .min(1, 'at least one source is needed');

export interface DispatcherConfig {
  subscription: WebhookSubscription;
  sources: Source[];
}

export class InvalidConfig extends Error {
  override name = 'InvalidConfig';
}

/** The dispatcher's config file (YAML or JSON) as the operator renders it: the subscription and its sources. */
export function loadConfig(file: string): DispatcherConfig {
  let doc: { subscription?: unknown; sources?: unknown };
  try {
    doc = parse(readFileSync(file, 'utf8')) ?? {};
  } catch (err) {
    throw new InvalidConfig(`${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  return parseConfig(doc);
}

export function parseConfig(doc: { subscription?: unknown; sources?: unknown }): DispatcherConfig {
  if (!doc.subscription) throw new InvalidConfig('subscription: required');
  let subscription: WebhookSubscription;
  try {
    const resource = parseResource(doc.subscription);
    if (resource.kind !== 'WebhookSubscription') throw new InvalidConfig('subscription: must be a WebhookSubscription');
    subscription = resource;
  } catch (err) {
    if (err instanceof InvalidConfig) throw err;
    throw new InvalidConfig(`subscription: ${(err as Error).message}`);
  }
  const parsed = sources.safeParse(doc.sources);
  if (!parsed.success) {
    const where = (i: z.core.$ZodIssue) => {
      const text = describeIssue(i);
      return i.path.length === 0 ? `sources: ${text}` : `sources${text.startsWith('[') ? '' : '.'}${text}`;
    };
    throw new InvalidConfig(parsed.error.issues.map(where).join('; '));
  }
  return { subscription, sources: parsed.data };
}
