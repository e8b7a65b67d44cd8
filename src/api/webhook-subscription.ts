import { z } from 'zod';
import { compileFilter, compileOrderingKey } from '../filter/cel.ts';
import {
  conditions,
  configMapKeyRef,
  described,
  duration,
  durationRule,
  httpHeaderName,
  inlineSecret,
  isDuration,
  matching,
  objectName,
  resourceSchema,
  resources,
  secretKeyRef,
  secretRefs,
} from './common.ts';
import { replayStatus } from './replay.ts';
import { withRules } from './rules.ts';

const eventTypePattern = matching(
  z.string().min(1).max(128),
  /^(\*|>|[A-Za-z0-9_-]+(\.([A-Za-z0-9_-]+|\*))*(\.>)?)$/,
  'must be an event type such as order.created, with * for one dot-separated part or a final > for the rest',
);

/** CEL: whether a target (url or service) is HTTPS. */
const targetIsHttps =
  "((has(self.url) && self.url.startsWith('https://')) || (has(self.service) && self.service.scheme == 'https'))";

export const targetTls = z
  .object({
    requireHttps: z
      .boolean()
      .default(false)
      .meta({
        description:
          'true: refuse a url or service that is not https (and an http:// deadLetter.sinkUrl), as receivers that ' +
          'accept only HTTPS endpoints (PROIGN, say) require.',
      }),
    clientCertificate: z
      .object({
        secretName: objectName(
          'A kubernetes.io/tls Secret in the same namespace: tls.crt (the certificate, PEM, with any intermediates) and tls.key (its private key, PEM).',
        ),
      })
      .optional()
      .meta({ description: 'The certificate the dispatcher presents, for a target that requires mutual TLS.' }),
    caBundle: withRules(
      z.object({
        secretKeyRef: secretKeyRef.optional(),
        configMapKeyRef: configMapKeyRef.optional(),
      }),
      {
        rule: 'has(self.secretKeyRef) != has(self.configMapKeyRef)',
        message:
          'caBundle sets exactly one of secretKeyRef and configMapKeyRef, such as configMapKeyRef: {name: orders-ca, key: ca.crt}',
      },
    )
      .optional()
      .meta({
        description:
          "PEM certificates the target's certificate must chain to, instead of the public roots (for a private CA), from a Secret or a ConfigMap.",
      }),
  })
  .meta({ description: 'TLS towards the target: a client certificate, a private CA, HTTPS only.' });

export const target = withRules(
  z.object({
    url: matching(
      z.string().max(2048),
      /^https?:\/\/[^\s/]+(\/\S*)?$/,
      'must be an absolute http:// or https:// URL, such as http://orders.shop.svc:8080/hooks',
    )
      .optional()
      .meta({ description: 'Where events are sent.' }),
    service: z
      .object({
        name: objectName('A Service in the same namespace.', 63),
        port: z.number().int().min(1).max(65535).default(80).meta({ description: 'The Service port number.' }),
        path: matching(z.string().max(1024), /^\//, 'must start with /, such as /hooks/orders')
          .default('/')
          .meta({ description: 'The request path, such as /hooks/orders.' }),
        scheme: z.enum(['http', 'https']).default('http').meta({ description: 'http or https.' }),
      })
      .optional()
      .meta({ description: 'A Service in the same namespace, instead of url.' }),
    method: z.enum(['POST', 'PUT', 'PATCH']).default('POST').meta({ description: 'The HTTP method.' }),
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
      .meta({
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
        description: 'Extra request headers, such as an API key the target expects.',
      }),
    timeout: duration('How long one delivery attempt may take.').default('30s'),
    allowPrivateAddresses: z.boolean().default(false).meta({
      description: 'Allow a url that resolves to a link-local or cloud metadata address (169.254.0.0/16, fe80::/10).',
    }),
    tls: targetTls.optional(),
  }),
  {
    rule: 'has(self.url) != has(self.service)',
    message: 'target sets exactly one of url and service',
  },
  {
    rule: `!has(self.tls) || !self.tls.requireHttps || ${targetIsHttps}`,
    message:
      'target.tls.requireHttps refuses plain HTTP: use an https:// url (such as https://orders.example.com/hooks) or service.scheme: https',
    fieldPath: '.tls.requireHttps',
  },
  {
    rule: `!has(self.tls) || !(has(self.tls.clientCertificate) || has(self.tls.caBundle)) || ${targetIsHttps}`,
    message:
      'target.tls.clientCertificate and caBundle apply to HTTPS only: use an https:// url or service.scheme: https',
    fieldPath: '.tls',
  },
);

export const signing = withRules(
  z.object({
    scheme: z.enum(['standardWebhooks', 'hmac', 'stripe', 'proign']).meta({
      description:
        'standardWebhooks: webhook-id, webhook-timestamp and webhook-signature headers, v1 (HMAC) for a whsec_ secret ' +
        'and v1a (Ed25519) for a whsk_ or PEM private key; hmac: one header with the HMAC of the body; stripe: ' +
        'Stripe-Signature: t=...,v1=...; proign: X-Proign-Signature: sha256=<HMAC of the re-serialized JSON>, as ' +
        "PROIGN's snippet checks. Every listed secret signs.",
    }),
    header: httpHeaderName(
      'For hmac, stripe and proign: the signature header; left out, X-Hookyard-Signature, Stripe-Signature and X-Proign-Signature.',
    ).optional(),
    algorithm: z.enum(['sha1', 'sha256', 'sha512']).default('sha256').meta({ description: 'For hmac: the hash.' }),
    encoding: z.enum(['hex', 'base64']).default('hex').meta({ description: 'For hmac: how the signature is written.' }),
    prefix: z.string().max(64).default('sha256=').meta({ description: 'For hmac: text before the signature.' }),
    secretRefs: secretRefs(
      'the signing secrets (for standardWebhooks whsec_... or an Ed25519 key, whsk_... or PEM)',
      'each of them signs every delivery, so a receiver holding either one verifies',
    ),
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
        multiplier: z
          .number()
          .min(1)
          .max(10)
          .default(2)
          .meta({ description: 'Each delay is the last one times this.' }),
        maxDelay: duration('Longest delay between attempts.').default('1h'),
        jitter: z.boolean().default(true).meta({ description: 'Full jitter: a random delay up to the computed one.' }),
      }),
      {
        rule: durationRule(
          ['self.maxDelay', 'self.initialDelay'],
          'duration(self.maxDelay) >= duration(self.initialDelay)',
        ),
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
    respectRetryAfter: z.boolean().default(true).meta({
      description: "Wait as long as a 429 or 503's Retry-After header asks, up to maxRetryAfter.",
    }),
    maxRetryAfter: duration('Longest Retry-After honoured.').default('1h'),
    retryableStatusCodes: z
      .array(
        matching(z.string().max(3), /^[1-5]([0-9]{2}|xx)$/, 'must be a status code such as 429 or a class such as 5xx'),
      )
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
      .object({
        matchLabels: z
          .record(z.string(), z.string())
          .meta({ description: 'Labels a ProviderEndpoint must all have, such as {team: shop}.' }),
      })
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
    ordering: z
      .object({
        key: z
          .string()
          .min(1)
          .max(4096)
          .superRefine((expression, ctx) => {
            try {
              compileOrderingKey(expression);
            } catch (err) {
              ctx.addIssue({ code: 'custom', message: (err as Error).message });
            }
          })
          .meta({
            description:
              'CEL over {type, headers, body} naming the key, such as body.order.id. Events of one key are delivered one at a time in the order they were received; an event without a key (the expression fails or is not a string or integer) is delivered without ordering.',
          }),
        onDeadLetter: z.enum(['Continue', 'DeadLetterRest']).default('Continue').meta({
          description:
            "When an event of a key is dead-lettered: Continue delivers the key's later events; DeadLetterRest dead-letters every later event of that key too, until the dead letters are replayed.",
        }),
      })
      .optional()
      .meta({
        description:
          'Per-key ordering: events with the same key reach the target in the order they were received, different keys in parallel up to concurrency. See docs/dispatcher.md.',
      }),
    target: described(target, 'Where events are delivered: a url, or a service in the same namespace.'),
    format: z
      .object({
        type: z.enum(['raw', 'envelope', 'cloudevents']).default('raw').meta({
          description: 'raw: the original bytes; envelope: {id, type, source, receivedAt, data}; cloudevents.',
        }),
        cloudEventsMode: z.enum(['binary', 'structured']).default('binary').meta({
          description: 'For cloudevents: binary (ce-* headers, the data as body) or structured (one JSON document).',
        }),
      })
      .prefault({})
      .meta({ description: 'What the target receives.' }),
    signing: described(
      signing,
      'How deliveries are signed, so the target can tell they come from Hookyard.',
    ).optional(),
    retry: described(retry, 'When failed deliveries are tried again, and how often.').prefault({}),
    ackWait: duration('How long JetStream waits on a delivery before handing it out again.').default('2m'),
    deadLetter: z
      .object({
        enabled: z.boolean().default(true).meta({
          description: 'false: events that cannot be delivered are dropped (and counted) instead of kept.',
        }),
        maxAge: duration('How long dead letters are kept.').default('720h'),
        sinkUrl: matching(
          z.string().max(2048),
          /^https?:\/\//,
          'must be an http:// or https:// URL, such as https://alerts.example.com/dead-letters',
        )
          .optional()
          .meta({ description: 'Also POST each dead letter here, such as an alerting service.' }),
        deletionPolicy: z.enum(['Delete', 'Retain']).default('Delete').meta({
          description: 'Whether the dead-letter stream and its events are deleted with the subscription.',
        }),
      })
      .prefault({})
      .meta({ description: 'Where events go that cannot be delivered: a stream of their own, to replay from.' }),
    history: z
      .object({
        enabled: z.boolean().default(true).meta({
          description: 'false: no record is kept of each delivery attempt (hookyard attempts shows nothing).',
        }),
        maxAge: duration('How long attempt records are kept.').default('168h'),
        maxRecords: z.number().int().min(1000).max(1_000_000_000).default(1_000_000).meta({
          description: 'At most this many attempt records; the oldest go first.',
        }),
      })
      .prefault({})
      .meta({ description: 'The record of every delivery attempt, in a stream of its own, and replays.' }),
    concurrency: z.number().int().min(1).max(1024).default(8).meta({
      description:
        'Deliveries in flight at once, per dispatcher pod: the target gets up to dispatcher.replicas times this.',
    }),
    rateLimit: z
      .object({
        perSecond: z
          .number()
          .gt(0)
          .max(100000)
          .meta({ description: 'Deliveries per second, on average, per dispatcher pod.' }),
        burst: z.number().int().min(1).max(100000).optional().meta({
          description: 'Deliveries that may go at once after a quiet spell; defaults to perSecond.',
        }),
      })
      .optional()
      .meta({
        description:
          'At most this many deliveries per second to the target from each dispatcher pod: dispatcher.replicas times this in all.',
      }),
    circuitBreaker: z
      .object({
        enabled: z.boolean().default(true).meta({ description: 'false: keep sending to a failing target.' }),
        failureThreshold: z.number().int().min(1).max(1000).default(10).meta({
          description: 'Failed attempts in a row that open the circuit: deliveries wait instead of failing.',
        }),
        openDuration: duration('How long to wait before probing a failing target again.').default('30s'),
      })
      .prefault({})
      .meta({ description: 'Stop hammering a target that keeps failing, and probe it until it answers.' }),
    paused: z.boolean().default(false).meta({
      description: 'true: nothing is delivered; events wait in the stream until it is false again.',
    }),
    dispatcher: z
      .object({
        replicas: z.number().int().min(0).max(100).default(1).meta({
          description: 'Dispatcher pods; they share the consumer and are spread over nodes and zones.',
        }),
        resources: resources.optional(),
      })
      .prefault({})
      .meta({ description: 'The dispatcher Deployment that delivers the events.' }),
  }),
  {
    rule: 'has(self.sources) != has(self.sourceSelector)',
    message: 'set exactly one of sources and sourceSelector',
  },
  {
    rule: durationRule(
      ['self.target.timeout', 'self.ackWait'],
      'duration(self.target.timeout) < duration(self.ackWait)',
    ),
    message:
      'target.timeout must be shorter than ackWait, or JetStream hands the event out again while it is still being delivered',
    fieldPath: '.target.timeout',
  },
  {
    rule: "!has(self.target.tls) || !self.target.tls.requireHttps || !has(self.deadLetter.sinkUrl) || self.deadLetter.sinkUrl.startsWith('https://')",
    message: 'target.tls.requireHttps also refuses an http:// deadLetter.sinkUrl: use an https:// one',
    fieldPath: '.deadLetter.sinkUrl',
  },
  {
    rule: '!has(oldSelf.ordering) || has(self.ordering)',
    message:
      "ordering cannot be removed: the subscription's consumers hand events to one pinned dispatcher at a time, which JetStream cannot turn off again; delete the WebhookSubscription and create it without ordering",
    transition: true,
  },
  {
    rule: "!has(self.ordering) || self.ordering.onDeadLetter != 'DeadLetterRest' || self.deadLetter.enabled",
    message:
      'ordering.onDeadLetter: DeadLetterRest keeps the rest of a key as dead letters, so it needs deadLetter.enabled: true; with dead letters disabled, use onDeadLetter: Continue',
    fieldPath: '.ordering.onDeadLetter',
  },
  {
    rule: `!has(self.retry.schedule) || self.retry.schedule.all(d, !${isDuration('d')} || duration(d) > duration("0s"))`,
    message: 'retry.schedule delays must be positive',
    fieldPath: '.retry.schedule',
  },
);

export const webhookSubscriptionStatus = z.object({
  observedGeneration: z.number().int().optional().meta({
    description: 'The metadata.generation the operator last acted on.',
  }),
  targetURL: z.string().optional().meta({
    description: 'Where deliveries go: spec.target.url, or the URL a spec.target.service resolves to.',
  }),
  conditions: conditions.optional(),
  pending: z.number().int().optional().meta({ description: 'Events waiting for delivery.' }),
  ackPending: z.number().int().optional().meta({ description: 'Events being delivered or waiting for a retry.' }),
  redelivered: z.number().int().optional().meta({ description: 'Events handed out more than once.' }),
  deadLettered: z.number().int().optional().meta({ description: 'Events in the dead-letter stream.' }),
  ordering: z
    .object({
      blockedKeys: z
        .number()
        .int()
        .meta({ description: 'Keys whose next event waits for an earlier event of the key to be retried.' }),
      blockedSince: z.string().optional().meta({
        format: 'date-time',
        description: "Since when the longest-blocked key has waited (when its event's retry was scheduled).",
      }),
    })
    .optional()
    .meta({ description: 'With spec.ordering: keys held back by a retrying event, and for how long.' }),
  replay: replayStatus.optional(),
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
