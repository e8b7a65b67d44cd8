import { z } from 'zod';
import {
  conditions,
  duration,
  durationRule,
  httpHeaderName,
  inlineSecret,
  matching,
  objectName,
  resourceSchema,
  resources,
  secretRefs,
} from './common.ts';
import { withRules } from './rules.ts';

export const providerNames = [
  'siteflow',
  'proign',
  'printiq',
  'shopflix',
  'fotoweb',
  'standard-webhooks',
  'github',
  'stripe',
  'shopify',
  'generic',
] as const;
export type ProviderName = (typeof providerNames)[number];

const tolerance = duration('How far the sender timestamp may be from now before the request is refused as a replay.');

export const hmacVerification = withRules(
  z
    .object({
      header: httpHeaderName('Header that carries the signature.').optional(),
      algorithm: z.enum(['sha1', 'sha256', 'sha512']).optional().meta({ description: 'HMAC hash.' }),
      encoding: z.enum(['hex', 'base64']).optional().meta({ description: 'How the signature is encoded.' }),
      prefix: z
        .string()
        .max(64)
        .optional()
        .meta({ description: 'Text before the encoded signature in the header, such as `sha256=`.' }),
      signedContent: z
        .enum(['body', 'template', 'jsonField', 'json'])
        .optional()
        .meta({
          description:
            'What the sender signs: the raw body; a template over the body and headers; one JSON field of the body ' +
            '(re-serialized); or the whole body re-serialized as compact JSON.',
        }),
      template: z.string().max(256).optional().meta({
        description: 'For signedContent template: the signed text, with {body}, {timestamp} and {header:Name}.',
      }),
      timestampHeader: httpHeaderName(
        'Header with the send time (Unix seconds), checked against tolerance.',
      ).optional(),
      jsonPaths: z.array(z.string().min(1).max(128)).min(1).max(8).optional().meta({
        description: 'For signedContent jsonField: dotted paths; the first one present in the body is signed.',
      }),
      tolerance: tolerance.optional(),
      secretRefs: secretRefs('the shared HMAC secret'),
      secret: inlineSecret('secretRefs').optional(),
    })
    .meta({ description: 'An HMAC signature over the request; fields left out come from the provider preset.' }),
  {
    rule: "!has(self.signedContent) || self.signedContent != 'template' || has(self.template)",
    message: 'signedContent template needs a template, such as "{timestamp}.{body}"',
    fieldPath: '.template',
  },
  {
    rule: "!has(self.signedContent) || self.signedContent != 'jsonField' || has(self.jsonPaths)",
    message: 'signedContent jsonField needs jsonPaths, the body field that is signed (for example ["data"])',
    fieldPath: '.jsonPaths',
  },
  {
    rule: "!has(self.template) || !self.template.contains('{timestamp}') || has(self.timestampHeader)",
    message: 'a template with {timestamp} needs timestampHeader, the header the timestamp is read from',
    fieldPath: '.timestampHeader',
  },
);

const timestamped = (what: string) =>
  z.object({
    secretRefs: secretRefs(what),
    tolerance: tolerance.default('5m'),
    secret: inlineSecret('secretRefs').optional(),
  });

const tokenFields = {
  secretRefs: secretRefs('the expected token'),
  token: inlineSecret('secretRefs').optional(),
};

export const verificationMethods = [
  'none',
  'hmac',
  'standardWebhooks',
  'stripe',
  'basicAuth',
  'bearer',
  'headerToken',
  'queryToken',
  'sourceCIDRs',
] as const;

export const verification = withRules(
  z
    .object({
      none: withRules(
        z.boolean().meta({ description: 'Accept unauthenticated requests. Must be said explicitly, and alone.' }),
        { rule: 'self == true', message: 'none may only be set to true; remove it to require verification' },
      ).optional(),
      hmac: hmacVerification.optional(),
      standardWebhooks: timestamped('the Standard Webhooks secret (whsec_...)')
        .meta({ description: 'Standard Webhooks: webhook-id, webhook-timestamp and webhook-signature headers.' })
        .optional(),
      stripe: timestamped('the endpoint signing secret (whsec_...)')
        .meta({ description: 'Stripe-Signature: t=<timestamp>,v1=<hex HMAC-SHA256 of "<t>.<body>">.' })
        .optional(),
      basicAuth: z
        .object({
          secretNames: z
            .array(objectName('A Secret with keys username and password.'))
            .min(1)
            .max(8)
            .meta({ description: 'Secrets of type kubernetes.io/basic-auth; any of them is accepted.' }),
          password: inlineSecret('secretNames').optional(),
        })
        .meta({ description: 'HTTP Basic authentication.' })
        .optional(),
      bearer: z.object(tokenFields).meta({ description: 'Authorization: Bearer <token>.' }).optional(),
      headerToken: z
        .object({ header: httpHeaderName('Header that carries the token.'), ...tokenFields })
        .meta({ description: 'A fixed token in a header of its own, compared in constant time.' })
        .optional(),
      queryToken: z
        .object({
          parameter: z.string().min(1).max(64).default('token').meta({ description: 'Query parameter name.' }),
          ...tokenFields,
        })
        .meta({ description: 'A token in the query string, for senders that cannot set headers.' })
        .optional(),
      sourceCIDRs: z
        .object({
          cidrs: z
            .array(
              matching(z.string().max(64), /^[0-9a-fA-F:.]+\/[0-9]{1,3}$/, 'must be a CIDR such as 203.0.113.0/24'),
            )
            .min(1)
            .max(64)
            .meta({ description: 'Networks requests may come from, such as ["203.0.113.0/24", "2001:db8::/32"].' }),
          trustedProxies: z.number().int().min(0).max(8).default(0).meta({
            description: 'Proxies in front of the receiver whose X-Forwarded-For entry is skipped to find the sender.',
          }),
        })
        .meta({ description: 'Only accept requests from these networks.' })
        .optional(),
    })
    .meta({ description: 'One verification method. Every entry of the list must pass.' }),
  {
    rule: `[${verificationMethods.map((m) => `has(self.${m})`).join(', ')}].filter(x, x).size() == 1`,
    message: `each verification entry sets exactly one of ${verificationMethods.join(', ')}`,
  },
);

export const eventTypeSources = ['header', 'body', 'route', 'constant'] as const;

export const providerEndpointSpec = withRules(
  z.object({
    provider: z.enum(providerNames).meta({
      description: 'Preset that supplies defaults for verification, event type, dedup and response.',
    }),
    verification: withRules(
      z.array(verification).min(1).max(8).meta({
        description:
          'How requests are authenticated; every entry must pass. An endpoint without verification must say [{none: true}].',
      }),
      {
        rule: '!self.exists(v, has(v.none)) || self.size() == 1',
        message: 'none cannot be combined with other verification methods',
      },
    ),
    routes: z
      .array(
        z.object({
          path: matching(
            z
              .string()
              .min(1)
              .max(64)
              .meta({ description: 'One URL path segment after /hooks/<namespace>/<name>/, such as statusupdate.' }),
            /^[A-Za-z0-9._~-]+$/,
            'must be one URL path segment (letters, digits, ".", "_", "~", "-"; no "/"), such as statusupdate',
          ),
          eventType: z.string().min(1).max(128).optional().meta({
            description: 'Event type of requests to this route; defaults to the path.',
          }),
        }),
      )
      .max(64)
      .optional()
      .meta({
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['path'],
        description: 'Sub-paths the provider posts to, each with its own event type (/hooks/<ns>/<name>/<path>).',
      }),
    eventType: withRules(
      z.object({
        source: z.enum(eventTypeSources).optional().meta({ description: 'Where the event type is read from.' }),
        header: httpHeaderName('For source header: the header name.').optional(),
        bodyPaths: z
          .array(z.string().min(1).max(128))
          .min(1)
          .max(8)
          .optional()
          .meta({ description: 'For source body: dotted paths; the first present wins.' }),
        value: z.string().min(1).max(128).optional().meta({ description: 'For source constant: the type.' }),
        aliases: z
          .record(z.string(), z.string())
          .optional()
          .meta({ description: 'Names to rewrite, such as order.deliverd: order.delivered.' }),
      }),
      {
        rule: "!has(self.source) || self.source != 'header' || has(self.header)",
        message: 'source header needs header, the name of the header with the event type',
        fieldPath: '.header',
      },
      {
        rule: "!has(self.source) || self.source != 'body' || has(self.bodyPaths)",
        message: 'source body needs bodyPaths, where in the body the event type is',
        fieldPath: '.bodyPaths',
      },
      {
        rule: "!has(self.source) || self.source != 'constant' || has(self.value)",
        message: 'source constant needs value, the event type to use',
        fieldPath: '.value',
      },
    )
      .optional()
      .meta({ description: 'Where the event type comes from; the preset decides what is left out.' }),
    dedup: withRules(
      z.object({
        source: z.enum(['header', 'body', 'bodyHash']).optional().meta({
          description: 'The dedup key: a header, body fields joined, or a SHA-256 of the raw body.',
        }),
        header: httpHeaderName('For source header: the header with the event id.').optional(),
        bodyPaths: z
          .array(z.string().min(1).max(128))
          .min(1)
          .max(8)
          .optional()
          .meta({ description: 'For source body: dotted paths whose values, joined, are the key.' }),
        window: duration(
          'How long a key is remembered (the JetStream duplicate window); default 1h for a body hash, 24h otherwise.',
        ).optional(),
      }),
      {
        rule: "!has(self.source) || self.source != 'header' || has(self.header)",
        message: 'source header needs header, the header that carries the event id',
        fieldPath: '.header',
      },
      {
        rule: "!has(self.source) || self.source != 'body' || has(self.bodyPaths)",
        message: 'source body needs bodyPaths, the body fields that identify the event',
        fieldPath: '.bodyPaths',
      },
    )
      .optional()
      .meta({ description: 'How repeated deliveries of one event are recognized.' }),
    response: z
      .object({
        status: z.number().int().min(200).max(299).optional().meta({
          description: 'Status for an accepted event (the preset knows what the provider wants: 200, 204, ...).',
        }),
        registrationCheck: z
          .object({
            header: httpHeaderName('Header that marks the check.'),
            value: z.string().min(1).max(256).meta({ description: 'The header value that marks the check.' }),
          })
          .optional()
          .meta({
            description: 'An unsigned validation request the provider sends once; answered 200, not published.',
          }),
      })
      .optional()
      .meta({ description: 'What the receiver answers; the preset knows what the provider expects.' }),
    payload: z
      .object({
        fallbackContentType: z.enum(['json', 'form', 'xml']).optional().meta({
          description: 'How to parse a body whose Content-Type is missing or unknown (such requests are counted).',
        }),
      })
      .optional()
      .meta({ description: 'How request bodies are read.' }),
    ingress: z
      .object({
        enabled: z.boolean().default(true).meta({ description: 'false: no Ingress; the receiver Service only.' }),
        className: z.string().max(253).optional().meta({
          description: 'The IngressClass; defaults to the chart value ingress.className.',
        }),
        host: z.string().max(253).optional().meta({
          description: 'The host providers call; defaults to the chart value ingress.host. status.url names it.',
        }),
        tls: z
          .object({ secretName: objectName('Secret with the certificate.') })
          .optional()
          .meta({ description: 'Serve HTTPS with the certificate in this Secret; status.url then says https://.' }),
        annotations: z
          .record(z.string(), z.string())
          .optional()
          .meta({ description: 'Annotations for the Ingress, such as those of the ingress controller.' }),
      })
      .optional()
      .meta({ description: 'The Ingress route /hooks/<namespace>/<name> that the operator creates.' }),
    receiver: z
      .object({
        replicas: z.number().int().min(0).max(100).default(2).meta({
          description: 'Receiver pods; they are spread over nodes and zones.',
        }),
        resources: resources.optional(),
        maxBodySize: matching(
          z.string().max(16),
          /^[0-9]+(Ki|Mi)?$/,
          'must be a size in bytes, Ki or Mi, such as 512Ki or 1Mi',
        )
          .default('1Mi')
          .meta({ description: 'Larger requests get 413.' }),
      })
      .prefault({})
      .meta({ description: 'The receiver Deployment that verifies requests and stores events.' }),
    stream: z
      .object({
        replicas: z.number().int().min(1).max(5).default(1).meta({ description: 'JetStream replicas (1, 3 or 5).' }),
        storage: withRules(z.enum(['file', 'memory']).default('file'), {
          rule: 'self == oldSelf',
          message:
            'stream.storage cannot be changed: JetStream cannot move a stream between file and memory; keep the value it has, or create a new ProviderEndpoint with the other storage',
          transition: true,
        }).meta({
          description: 'file keeps events across NATS restarts; memory does not. Fixed once the endpoint exists.',
        }),
        maxAge: duration('How long events are kept.').default('168h'),
        deletionPolicy: z.enum(['Delete', 'Retain']).default('Delete').meta({
          description: 'Whether the stream and its events are deleted with the resource.',
        }),
      })
      .prefault({})
      .meta({ description: "The JetStream stream that keeps this endpoint's events." }),
  }),
  {
    rule: `!has(self.dedup) || !has(self.dedup.window) || (${durationRule(
      ['self.dedup.window', 'self.stream.maxAge'],
      'duration(self.dedup.window) <= duration(self.stream.maxAge)',
    )})`,
    message: 'dedup.window cannot be longer than stream.maxAge',
    fieldPath: '.dedup.window',
  },
  {
    rule: 'self.stream.replicas in [1, 3, 5]',
    message: 'stream.replicas must be 1, 3 or 5',
    fieldPath: '.stream.replicas',
  },
);

export const providerEndpointStatus = z.object({
  observedGeneration: z.number().int().optional().meta({
    description: 'The metadata.generation the operator last acted on.',
  }),
  url: z.string().optional().meta({ description: 'The URL to give the provider.' }),
  conditions: conditions.optional(),
});

export const providerEndpoint = resourceSchema('ProviderEndpoint', providerEndpointSpec, providerEndpointStatus);

export type ProviderEndpointSpec = z.infer<typeof providerEndpointSpec>;
export type ProviderEndpoint = z.infer<typeof providerEndpoint>;
export type Verification = z.infer<typeof verification>;
export type HmacVerification = z.infer<typeof hmacVerification>;
