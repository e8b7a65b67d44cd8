import { z } from 'zod';
import { nameRules, type ownedNamePrefix } from './names.ts';
import { requiredByRule, withRules } from './rules.ts';

export const group = 'hookyard.io';
export const version = 'v1alpha1';
export const apiVersion = `${group}/${version}`;

/**
 * A string format checked by a CEL rule rather than an OpenAPI pattern, so that the API server's refusal says
 * `message` (what to type, with an example) instead of printing the regex.
 */
export const matching = <T extends z.ZodType>(schema: T, pattern: RegExp, message: string) =>
  withRules(schema, { rule: `self.matches(${celString(pattern.source)})`, message });

/** A CEL string literal: backslashes and quotes escaped. */
const celString = (text: string) => `'${text.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;

const durationPattern = /^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$/;

/** CEL that is true when `expression` is a duration in the form the schema accepts. */
export const isDuration = (expression: string) => `${expression}.matches(${celString(durationPattern.source)})`;

/** A Go-style duration such as `30s`, `5m` or `1h30m`: what Kubernetes' CEL `duration()` reads. */
export const duration = (description: string) =>
  matching(
    z.string().max(32).meta({ description }),
    durationPattern,
    'must be a duration: a number and a unit (ms, s, m or h) without spaces, such as 30s, 5m or 1h30m',
  );

/**
 * A rule that compares durations, written to hold while one of them is malformed: that field's own rule says what
 * to type, and the API server adds no type conversion error of its own.
 */
export const durationRule = (durations: string[], rule: string) =>
  `!(${durations.map(isDuration).join(' && ')}) || ${rule}`;

/** The schema with a description added to its metadata (rules included). */
export const described = <T extends z.ZodType>(schema: T, description: string): T =>
  schema.meta({ ...schema.meta(), description }) as T;

/** The name of an object in the same namespace (RFC 1123 subdomain). */
/** As a rule with a message, not a CRD pattern: the API server would answer a bad name with the bare regex. */
export const objectName = (description: string, maxLength = 253) =>
  matching(
    z.string().min(1).max(maxLength).meta({ description }),
    /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
    'must be a lowercase RFC 1123 name (letters, digits, "-" and "."), such as shop-orders',
  );

export const httpHeaderName = (description: string) =>
  matching(
    z.string().min(1).max(256).meta({ description }),
    /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/,
    'must be an HTTP header name such as X-Signature: letters, digits and -, without spaces or a colon',
  );

const secretRefsMessage =
  'secretRefs is required: store the value in a Secret (kubectl create secret generic NAME --from-literal=KEY=VALUE) ' +
  'and reference it with secretRefs: [{name: NAME, key: KEY}]';

export const secretKeyRef = z
  .object({
    name: objectName('Name of a Secret in the resource namespace.'),
    key: z.string().min(1).max(253).meta({ description: 'Key inside the Secret.' }),
  })
  .meta({ description: 'A key of a Secret in the same namespace.' });
export type SecretKeyRef = z.infer<typeof secretKeyRef>;

export const configMapKeyRef = z
  .object({
    name: objectName('Name of a ConfigMap in the resource namespace.'),
    key: z.string().min(1).max(253).meta({ description: 'Key inside the ConfigMap.' }),
  })
  .meta({ description: 'A key of a ConfigMap in the same namespace.' });
export type ConfigMapKeyRef = z.infer<typeof configMapKeyRef>;

/** One or more Secret keys: list the new one beside the old one while rotating. */
export const secretRefs = (what: string, rotation = 'any of them is accepted') =>
  z
    .array(secretKeyRef, { error: (issue) => (issue.input === undefined ? secretRefsMessage : undefined) })
    .min(1)
    .max(8)
    .meta({
      description: `Required. Secret keys holding ${what}. Several may be listed at once for rotation: ${rotation}.`,
      [requiredByRule]: secretRefsMessage,
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
      message: `secret values may not be written into the resource; store the value in a Secret (kubectl create secret generic NAME --from-literal=KEY=VALUE) and reference it with ${refField}`,
    },
  );

export const quantity = z
  .union([z.string().max(64), z.number().int()])
  .meta({ 'x-kubernetes-int-or-string': true, description: 'A Kubernetes quantity such as 100m, 128Mi or 1.' });

export const resources = z
  .object({
    requests: z.record(z.string(), quantity).optional().meta({
      description: 'What the scheduler reserves for each pod, such as {cpu: 50m, memory: 128Mi}.',
    }),
    limits: z.record(z.string(), quantity).optional().meta({
      description: 'The most each pod may use, such as {memory: 384Mi}; memory above it restarts the pod.',
    }),
  })
  .meta({
    description:
      'Compute resources of the pods, as in a container spec. Left out: 50m CPU, 128Mi memory and 64Mi ephemeral ' +
      'storage requested, 384Mi memory and 256Mi ephemeral storage at most; set, it replaces all of these.',
  });

export const condition = z.object({
  type: z.string().max(316).meta({ description: 'What the condition is about, such as Ready or StreamReady.' }),
  status: z.enum(['True', 'False', 'Unknown']).meta({ description: 'Whether it holds: True, False or Unknown.' }),
  reason: z.string().max(1024).meta({ description: 'One word in CamelCase for why, such as SecretNotFound.' }),
  message: z.string().max(32768).meta({ description: 'What is wrong and what to do, in words.' }),
  lastTransitionTime: z.string().meta({ format: 'date-time', description: 'When status last changed.' }),
  observedGeneration: z
    .number()
    .int()
    .min(0)
    .optional()
    .meta({ description: 'The metadata.generation the condition was computed from.' }),
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
