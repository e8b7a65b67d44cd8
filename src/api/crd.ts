import { stringify } from 'yaml';
import { z } from 'zod';
import { group, version } from './common.ts';
import { kinds as registry } from './kinds.ts';
import { nameRules } from './names.ts';
import { providerEndpointSpec, providerEndpointStatus } from './provider-endpoint.ts';
import { type Rule, requiredByRule } from './rules.ts';
import { webhookSubscriptionSpec, webhookSubscriptionStatus } from './webhook-subscription.ts';

type Schema = Record<string, unknown>;

const readyColumn = {
  name: 'Ready',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].status',
};
// Why a resource is not Ready, in one word; `kubectl describe` has the condition's message.
const reasonColumn = {
  name: 'Reason',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
};
const ageColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

interface Kind {
  kind: 'ProviderEndpoint' | 'WebhookSubscription';
  plural: string;
  shortNames: string[];
  description: string;
  spec: z.ZodType;
  status: z.ZodType;
  columns: Schema[];
}

export const kinds: Kind[] = [
  {
    kind: 'ProviderEndpoint',
    plural: registry.ProviderEndpoint.plural,
    shortNames: ['pe', 'hookendpoint'],
    description: 'Where a webhook provider may send events, and how they are verified, typed and deduplicated.',
    spec: providerEndpointSpec,
    status: providerEndpointStatus,
    columns: [
      { name: 'Provider', type: 'string', jsonPath: '.spec.provider' },
      readyColumn,
      reasonColumn,
      { name: 'URL', type: 'string', jsonPath: '.status.url' },
      ageColumn,
    ],
  },
  {
    kind: 'WebhookSubscription',
    plural: registry.WebhookSubscription.plural,
    shortNames: ['wsub', 'hooksub'],
    description: 'Who inside the cluster receives which events of which ProviderEndpoints, and how they are delivered.',
    spec: webhookSubscriptionSpec,
    status: webhookSubscriptionStatus,
    columns: [
      readyColumn,
      reasonColumn,
      { name: 'Target', type: 'string', jsonPath: '.status.targetURL' },
      { name: 'Paused', type: 'boolean', jsonPath: '.spec.paused' },
      { name: 'Pending', type: 'integer', jsonPath: '.status.pending' },
      { name: 'Dead', type: 'integer', jsonPath: '.status.deadLettered' },
      ageColumn,
    ],
  },
];

/** The zod schema as a structural OpenAPI v3 schema, the form the API server requires of a CRD. */
export function openAPISchema(schema: z.ZodType): Schema {
  const json = z.toJSONSchema(schema, { target: 'openapi-3.0', io: 'input', unrepresentable: 'throw' }) as Schema;
  delete json.$schema;
  return structural(json);
}

const jsSafeInteger = 9007199254740991;

function structural(node: Schema): Schema {
  if (node['x-kubernetes-int-or-string']) {
    const { anyOf: _anyOf, ...rest } = node;
    return rest;
  }
  const out: Schema = {};
  for (const [key, value] of Object.entries(node)) {
    if ((key === 'maximum' || key === 'minimum') && Math.abs(value as number) === jsSafeInteger) continue;
    if (key === 'properties') {
      out.properties = Object.fromEntries(
        Object.entries(value as Record<string, Schema>).map(([name, child]) => [name, structural(child)]),
      );
    } else if (key === 'x-kubernetes-validations') {
      out[key] = crdRules(value as Rule[]);
    } else if (key === 'items' || (key === 'additionalProperties' && typeof value === 'object')) {
      out[key] = structural(value as Schema);
    } else {
      out[key] = value;
    }
  }
  if (out.type === 'object' && out.properties && out.additionalProperties === false) delete out.additionalProperties;
  requiredThroughRules(out);
  if (out.required && (out.required as string[]).length === 0) delete out.required;
  return out;
}

/** Turns each required property marked with requiredByRule into a rule of the object that says its message. */
function requiredThroughRules(node: Schema): void {
  const properties = (node.properties ?? {}) as Record<string, Schema>;
  for (const [name, child] of Object.entries(properties)) {
    const message = child[requiredByRule] as string | undefined;
    if (message === undefined) continue;
    delete child[requiredByRule];
    node.required = ((node.required as string[] | undefined) ?? []).filter((r) => r !== name);
    const rules = (node['x-kubernetes-validations'] as Schema[] | undefined) ?? [];
    node['x-kubernetes-validations'] = [...rules, { rule: `has(self.${name})`, message, fieldPath: `.${name}` }];
  }
}

/** Rules as the CRD carries them: `transition` is Hookyard's own mark (the API server sees `oldSelf`). */
const crdRules = (rules: Rule[]) => rules.map(({ transition: _transition, ...rule }) => rule);

export function customResourceDefinition(k: Kind): Schema {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${k.plural}.${group}`, labels: { 'app.kubernetes.io/part-of': 'hookyard' } },
    spec: {
      group,
      names: {
        kind: k.kind,
        listKind: `${k.kind}List`,
        plural: k.plural,
        singular: k.kind.toLowerCase(),
        shortNames: k.shortNames,
        categories: ['hookyard'],
      },
      scope: 'Namespaced',
      versions: [
        {
          name: version,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: k.columns,
          schema: {
            openAPIV3Schema: {
              description: k.description,
              type: 'object',
              required: ['spec'],
              // Root rules are the only ones that may read metadata.name.
              'x-kubernetes-validations': crdRules(nameRules(k.kind)),
              properties: {
                apiVersion: { type: 'string' },
                kind: { type: 'string' },
                // Named so that the root rules' fieldPath may point at it.
                metadata: { type: 'object', properties: { name: { type: 'string' } } },
                spec: { description: `What the ${k.kind} should be.`, ...openAPISchema(k.spec) },
                status: {
                  description: `What the operator last saw of the ${k.kind}; read it when it is not Ready.`,
                  ...openAPISchema(k.status),
                },
              },
            },
          },
        },
      ],
    },
  };
}

export const crdFileName = (k: Kind) => `${group}_${k.plural}.yaml`;

/** Where kubeconform finds a kind's JSON schema: `-schema-location 'crds/schemas/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json'`. */
export const jsonSchemaFileName = (k: Kind) => `${group}/${k.kind.toLowerCase()}_${version}.json`;

/**
 * A whole resource of the kind as a strict JSON schema, for validating manifests without a cluster (kubeconform,
 * editors): the CRD's schema with unknown fields refused, which the API server would drop or refuse at apply.
 * The CEL rules are left out: JSON schema cannot say them.
 */
export function jsonSchema(k: Kind): Schema {
  const crd = customResourceDefinition(k) as {
    spec: { versions: { schema: { openAPIV3Schema: Schema } }[] };
  };
  const root = crd.spec.versions[0]?.schema.openAPIV3Schema as Schema & { properties: Record<string, Schema> };
  return strict({
    ...root,
    required: ['apiVersion', 'kind', 'metadata', 'spec'],
    properties: {
      ...root.properties,
      apiVersion: { type: 'string', enum: [`${group}/${version}`] },
      kind: { type: 'string', enum: [k.kind] },
      // ObjectMeta is Kubernetes' own (labels, annotations, ...): only the name is ours to describe.
      metadata: { ...root.properties.metadata, additionalProperties: true },
    },
  });
}

function strict(node: Schema): Schema {
  const out: Schema = {};
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith('x-kubernetes-')) continue;
    if (key === 'properties') {
      out.properties = Object.fromEntries(
        Object.entries(value as Record<string, Schema>).map(([name, child]) => [name, strict(child)]),
      );
    } else if (key === 'items' || (key === 'additionalProperties' && typeof value === 'object')) {
      out[key] = strict(value as Schema);
    } else {
      out[key] = value;
    }
  }
  if (node['x-kubernetes-int-or-string']) out.type = ['integer', 'string'];
  if (out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
  const pattern = formatPattern(node);
  if (pattern) out.pattern = pattern;
  return out;
}

/** The regex of a format rule written with `matching` (`self.matches('...')`), back as a JSON schema pattern. */
function formatPattern(node: Schema): string | undefined {
  const rules = (node['x-kubernetes-validations'] as { rule: string }[] | undefined) ?? [];
  const literal = rules.map((r) => r.rule.match(/^self\.matches\('(.*)'\)$/)?.[1]).find((m) => m !== undefined);
  return literal?.replace(/\\(.)/g, '$1');
}

export const jsonSchemaText = (k: Kind) => `${JSON.stringify(jsonSchema(k), null, 2)}\n`;

export function crdYAML(k: Kind): string {
  return `# Generated by \`npm run generate\` from src/api; do not edit.\n${stringify(customResourceDefinition(k), { lineWidth: 0 })}`;
}

/** The reference of both resources' fields as Markdown, from the same schemas as the CRDs. */
export function apiReference(): string {
  const out = [
    '# API reference: hookyard.io/v1alpha1',
    '',
    'Generated by `npm run generate` from src/api; do not edit.',
  ];
  for (const k of kinds) {
    out.push('', `## ${k.kind}`, '', k.description, '', `Short names: ${k.shortNames.join(', ')}.`);
    for (const part of ['spec', 'status'] as const) {
      out.push('', `### ${part}`, '', '| Field | Type | Default | Description |', '| --- | --- | --- | --- |');
      for (const row of fieldRows(openAPISchema(part === 'spec' ? k.spec : k.status), part)) out.push(row);
    }
  }
  return `${out.join('\n')}\n`;
}

function fieldRows(node: Schema, path: string): string[] {
  const rows: string[] = [];
  const properties = node.properties as Record<string, Schema> | undefined;
  const items = node.items as Schema | undefined;
  if (items?.properties) rows.push(...fieldRows(items, `${path}[]`));
  for (const [name, child] of Object.entries(properties ?? {})) {
    const childPath = `${path}.${name}`;
    rows.push(`| \`${childPath}\` | ${typeOf(child)} | ${defaultOf(child)} | ${describe(child)} |`);
    rows.push(...fieldRows(child, childPath));
  }
  return rows;
}

function typeOf(node: Schema): string {
  if (node['x-kubernetes-int-or-string']) return 'int or string';
  if (node.enum) return (node.enum as string[]).map((v) => `\`${v}\``).join(' \\| ');
  if (node.type === 'array') return `${typeOf(node.items as Schema)}[]`;
  if (node.type === 'object' && node.additionalProperties) return 'map';
  return String(node.type);
}

function defaultOf(node: Schema): string {
  return node.default === undefined || JSON.stringify(node.default) === '{}'
    ? ''
    : `\`${JSON.stringify(node.default)}\``;
}

function describe(node: Schema): string {
  const rules = (node['x-kubernetes-validations'] as { message: string }[] | undefined) ?? [];
  const text = [node.description, ...rules.map((r) => `Rule: ${r.message}.`)].filter(Boolean).join(' ');
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}
