import { z } from 'zod';
import { compileFilter } from '../filter/cel.ts';
import {
  conditions,
  duration,
  httpHeaderName,
  inlineSecret,
  objectName,
  resourceSchema,
  resources,
  secretKeyRef,
  secretRefs,
} from './common.ts';
import { withRules } from './rules.ts';

const eventTypePattern = z
  .string()
  .min(1)
  .max(128)
  .regex(
    /^(\*|>|[A-Za-z0-9_-]+(\.([A-Za-z0-9_-]+|\*))*(\.>)?)$/,
    'must be an event type such as order.created, with * for one dot-separated part or a final > for the rest',
  );

export const target = withRules(
  z.object({
    url: z
      .string()
      .max(2048)
      .regex(/^https?:\/\/[^\s/]+(\/\S*)?$/, 'must be an absolute http:// or https:// URL')
      .optional()
      .meta({ description: 'Where events are sent.' }),
    service: z
      .object({
        name: objectName('A Service in the same namespace.', 63),
        port: z.number().int().min(1).max(65535).default(80),
        path: z.string().max(1024).regex(/^\//, 'must start with /').default('/'),
        scheme: z.enum(['http', 'https']).default('http'),
      })
      .optional()
      .meta({ description: 'A Service in the same namespace, instead of url.' }),
    method: z.enum(['POST', 'PUT', 'PATCH']).default('POST'),
    headers: z
      .array(
        withRules(
          z.object({
            name: httpHeaderName('Header name.'),
            value: z.string().max(4096).optional().meta({ description: 'A plain value (not for secrets).' }),
            valueFrom: z.object({ secretKeyRef }).optional().meta({ description: 'The value, from a Secret.' }),
          }),
          {
            rule: 'has(self.value) != has(self.valueFrom)',
            message: 'each header sets exactly one of value and valueFrom',
          },
        ),
      )
      .max(32)
      .optional()
      .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] }),
    timeout: duration('How long one delivery attempt may take.').default('30s'),
    allowPrivateAddresses: z.boolean().default(false).meta({
      description: 'Allow a url that resolves to a link-local or cloud metadata address (169.254.0.0/16, fe80::/10).',
    }),
  }),
  {
    rule: 'has(self.url) != has(self.service)',
    message: 'target sets exactly one of url and service',
  },
);

export const signing = withRules(
  z.object({
    scheme: z.enum(['standardWebhooks', 'hmac']).meta({
      description: 'standardWebhooks: webhook-id, webhook-timestamp, webhook-signature headers; hmac: one header.',
    }),
    header: httpHeaderName('For hmac: the signature header.').default('X-Hookyard-Signature'),
    algorithm: z.enum(['sha1', 'sha256', 'sha512']).default('sha256'),
    encoding: z.enum(['hex', 'base64']).default('hex'),
    prefix: z.string().max(64).default('sha256=').meta({ description: 'For hmac: text before the signature.' }),
    secretRefs: secretRefs('the signing secret'),
    secret: inlineSecret('secretRefs').optional(),
  }),
  {
    rule: "self.scheme != 'hmac' || self.algorithm != 'sha1'",
    message: 'sha1 is too weak for signing; use sha256 or sha512',
    fieldPath: '.algorithm',
  },
);

export const retry = withRules(
  z.object({
    maxAttempts: z.number().int().min(1).max(100).default(8).meta({
      description: 'Attempts in all, the first included; then the event is dead-lettered.',
    }),
    backoff: withRules(
      z.object({
        initialDelay: duration('Delay before the first retry.').default('10s'),
        multiplier: z.number().min(1).max(10).default(2),
        maxDelay: duration('Longest delay between attempts.').default('1h'),
        jitter: z.boolean().default(true).meta({ description: 'Full jitter: a random delay up to the computed one.' }),
      }),
      {
        rule: 'duration(self.maxDelay) >= duration(self.initialDelay)',
        message: 'maxDelay must be at least initialDelay',
        fieldPath: '.maxDelay',
      },
    )
      .optional()
      .meta({ description: 'Exponential backoff (the default when no schedule is given).' }),
    schedule: z
      .array(duration('Delay before this retry.'))
      .min(1)
      .max(32)
      .optional()
      .meta({ description: 'Explicit delays before each retry, such as [1m, 5m, 30m, 2h, 24h]; the last repeats.' }),
    respectRetryAfter: z.boolean().default(true),
    maxRetryAfter: duration('Longest Retry-After honoured.').default('1h'),
    retryableStatusCodes: z
      .array(z.string().regex(/^[1-5]([0-9]{2}|xx)$/, 'must be a status code such as 429 or a class such as 5xx'))
      .max(64)
      .default(['408', '429', '5xx'])
      .meta({ description: 'Statuses that are retried; network errors and timeouts always are. 410 pauses.' }),
  }),
  {
    rule: '!(has(self.backoff) && has(self.schedule))',
    message: 'set either backoff or schedule, not both',
    fieldPath: '.schedule',
  },
);

export const webhookSubscriptionSpec = withRules(
  z.object({
    sources: z
      .array(z.object({ endpoint: objectName('A ProviderEndpoint in the same namespace.', 63) }))
      .min(1)
      .max(32)
      .optional()
      .meta({ description: 'The ProviderEndpoints whose events this subscription receives.' }),
    sourceSelector: z
      .object({ matchLabels: z.record(z.string(), z.string()) })
      .optional()
      .meta({ description: 'Instead of sources: every ProviderEndpoint in the namespace with these labels.' }),
    eventTypes: z
      .array(eventTypePattern)
      .min(1)
      .max(32)
      .default(['>'])
      .meta({ description: 'Event types to receive; * matches one dot-separated part, a final > the rest.' }),
    filter: z
      .string()
      .max(4096)
      .superRefine((expression, ctx) => {
        try {
          compileFilter(expression);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message });
        }
      })
      .optional()
      .meta({
        description:
          'CEL over {type, headers, body}; events for which it is not true are skipped. Checked when admitted.',
      }),
    target,
    format: z
      .object({
        type: z.enum(['raw', 'envelope', 'cloudevents']).default('raw').meta({
          description: 'raw: the original bytes; envelope: {id, type, source, receivedAt, data}; cloudevents.',
        }),
        cloudEventsMode: z.enum(['binary', 'structured']).default('binary'),
      })
      .prefault({}),
    signing: signing.optional(),
    retry: retry.prefault({}),
    ackWait: duration('How long JetStream waits on a delivery before handing it out again.').default('2m'),
    deadLetter: z
      .object({
        enabled: z.boolean().default(true),
        maxAge: duration('How long dead letters are kept.').default('720h'),
        sinkUrl: z
          .string()
          .max(2048)
          .regex(/^https?:\/\//, 'must be an http:// or https:// URL')
          .optional(),
        deletionPolicy: z.enum(['Delete', 'Retain']).default('Delete').meta({
          description: 'Whether the dead-letter stream and its events are deleted with the subscription.',
        }),
      })
      .prefault({}),
    concurrency: z.number().int().min(1).max(1024).default(8).meta({ description: 'Deliveries in flight at once.' }),
    rateLimit: z
      .object({
        perSecond: z.number().gt(0).max(100000),
        burst: z.number().int().min(1).max(100000).optional(),
      })
      .optional(),
    circuitBreaker: z
      .object({
        enabled: z.boolean().default(true),
        failureThreshold: z.number().int().min(1).max(1000).default(10),
        openDuration: duration('How long to wait before probing a failing target again.').default('30s'),
      })
      .prefault({}),
    paused: z.boolean().default(false),
    dispatcher: z
      .object({
        replicas: z.number().int().min(0).max(100).default(1),
        resources: resources.optional(),
      })
      .prefault({}),
  }),
  {
    rule: 'has(self.sources) != has(self.sourceSelector)',
    message: 'set exactly one of sources and sourceSelector',
  },
  {
    rule: 'duration(self.target.timeout) < duration(self.ackWait)',
    message:
      'target.timeout must be shorter than ackWait, or JetStream hands the event out again while it is still being delivered',
    fieldPath: '.target.timeout',
  },
  {
    rule: '!has(self.retry.schedule) || self.retry.schedule.all(d, duration(d) > duration("0s"))',
    message: 'retry.schedule delays must be positive',
    fieldPath: '.retry.schedule',
  },
);

export const webhookSubscriptionStatus = z.object({
  observedGeneration: z.number().int().optional(),
  conditions: conditions.optional(),
  pending: z.number().int().optional().meta({ description: 'Events waiting for delivery.' }),
  ackPending: z.number().int().optional().meta({ description: 'Events being delivered or waiting for a retry.' }),
  redelivered: z.number().int().optional(),
  deadLettered: z.number().int().optional().meta({ description: 'Events in the dead-letter stream.' }),
  lastAckTime: z.string().optional().meta({
    format: 'date-time',
    description: 'When the dispatcher last finished with an event: delivered, filtered out or dead-lettered.',
  }),
});

export const webhookSubscription = resourceSchema(
  'WebhookSubscription',
  webhookSubscriptionSpec,
  webhookSubscriptionStatus,
);

export type WebhookSubscriptionSpec = z.infer<typeof webhookSubscriptionSpec>;
export type WebhookSubscription = z.infer<typeof webhookSubscription>;
