import { z } from 'zod';
import { nameRules, type ownedNamePrefix } from './names.ts';
import { withRules } from './rules.ts';

export const group = 'hookyard.io';
export const version = 'v1alpha1';
export const apiVersion = `${group}/${version}`;

/** A Go-style duration such as `30s`, `5m` or `1h30m`: what Kubernetes' CEL `duration()` reads. */
export const duration = (description: string) =>
  z
    .string()
    .max(32)
    .regex(/^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$/, 'must be a duration such as 500ms, 30s, 5m or 1h30m')
    .meta({ description });

/** The name of an object in the same namespace (RFC 1123 subdomain). */
export const objectName = (description: string, maxLength = 253) =>
  z
    .string()
    .min(1)
    .max(maxLength)
    .regex(
      /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
      'must be a lowercase RFC 1123 name (letters, digits, "-" and ".")',
    )
    .meta({ description });

export const httpHeaderName = (description: string) =>
  z
    .string()
    .min(1)
    .max(256)
    .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be an HTTP header name')
    .meta({ description });

export const secretKeyRef = z
  .object({
    name: objectName('Name of a Secret in the resource namespace.'),
    key: z.string().min(1).max(253).meta({ description: 'Key inside the Secret.' }),
  })
  .meta({ description: 'A key of a Secret in the same namespace.' });
export type SecretKeyRef = z.infer<typeof secretKeyRef>;

/** One or more Secret keys, tried in order: list the new one beside the old one while rotating. */
export const secretRefs = (what: string) =>
  z
    .array(secretKeyRef)
    .min(1)
    .max(8)
    .meta({
      description: `Secret keys holding ${what}. Several may be listed at once for rotation: any of them is accepted when checking, the first is used when signing.`,
    });

/**
 * A field that would hold a secret value written into the spec. It exists only so that the API server can refuse
 * it with a message that says where secrets go, instead of a bare "unknown field".
 */
export const inlineSecret = (refField: string) =>
  withRules(
    z
      .string()
      .max(4096)
      .meta({ description: `Not allowed: secret values go in a Secret referenced by ${refField}.` }),
    {
      rule: 'false',
      message: `secret values may not be written into the resource; store the value in a Secret and reference it with ${refField}`,
    },
  );

export const quantity = z
  .union([z.string().max(64), z.number().int()])
  .meta({ 'x-kubernetes-int-or-string': true, description: 'A Kubernetes quantity such as 100m, 128Mi or 1.' });

export const resources = z
  .object({
    requests: z.record(z.string(), quantity).optional(),
    limits: z.record(z.string(), quantity).optional(),
  })
  .meta({ description: 'Compute resources of the pods, as in a container spec.' });

export const condition = z.object({
  type: z.string().max(316),
  status: z.enum(['True', 'False', 'Unknown']),
  reason: z.string().max(1024),
  message: z.string().max(32768),
  lastTransitionTime: z.string().meta({ format: 'date-time' }),
  observedGeneration: z.number().int().min(0).optional(),
});
export type Condition = z.infer<typeof condition>;

export const conditions = z
  .array(condition)
  .max(16)
  .meta({
    'x-kubernetes-list-type': 'map',
    'x-kubernetes-list-map-keys': ['type'],
    description: 'Current state, one condition per type; Ready summarizes the others.',
  });

/** The parts of ObjectMeta a manifest must carry. */
export const objectMeta = z
  .object({
    name: objectName('Name of the resource.', 63),
    namespace: objectName('Namespace of the resource.', 63).optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
  })
  .passthrough();

/**
 * A whole resource of one of Hookyard's kinds: what manifests, the admission webhook and dev mode check. Its name
 * follows the rules of names.ts, which the CRD carries as root rules.
 */
export const resourceSchema = <
  K extends keyof typeof ownedNamePrefix,
  Spec extends z.ZodType,
  Status extends z.ZodType,
>(
  kind: K,
  spec: Spec,
  status: Status,
) =>
  withRules(
    z.object({
      apiVersion: z.literal(apiVersion),
      kind: z.literal(kind),
      metadata: objectMeta,
      spec,
      status: status.optional(),
    }),
    ...nameRules(kind),
  );
