// Each seed provider's documented webhooks, as the provider sends them: used by `hookyard send`, the demo and
// the tests. Bodies from the providers' documents are kept byte for byte in samples/.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ProviderName } from '../api/provider-endpoint.ts';
import { hmac } from '../signatures/hmac.ts';
import { signStandardWebhook, standardWebhookKey } from '../signatures/standard-webhooks.ts';
import { signStripe } from '../signatures/stripe.ts';

export interface Sample {
  name: string;
  /** Sub-route of the endpoint, for providers that post each event to its own URL. */
  route?: string;
  /** Undefined: the request carries no Content-Type (a documented mistake some senders make). */
  contentType?: string;
  body: Buffer;
  headers?: Record<string, string>;
  /** Sent without a signature even when a secret is given, as the provider sends it (Shopflix's registration check). */
  unsigned?: boolean;
}

const file = (name: string) => readFileSync(join(import.meta.dirname, 'samples', name));
const json = 'application/json';

/** FotoWeb's form webhook: every field its document lists, in its order. */
export const fotowebFormFields: [string, string][] = [
  ['id', 'b5a1e0c2-6f0e-4c55-9d0e-3f1f2c7a8e11'],
  ['href', '/fotoweb/me/orders/1042/'],
  ['created', '2016-12-12T14:18:49.915000Z'],
  ['modified', '2016-12-12T14:20:02.101000Z'],
  ['state', 'submitted'],
  ['expires', ''],
  ['numOrderItems', '2'],
  ['orderReference', 'ORD-1042'],
  ['checkoutPageLocation', 'https://dam.example.com/checkout/1042'],
  ['adminComment', ''],
  ['userComment', 'Bitte bis Freitag – danke!'],
  ['user-href', '/fotoweb/users/jdoe/'],
  ['user-username', 'jdoe'],
  ['user-firstName', 'Jürgen'],
  ['user-initial', 'K'],
  ['user-lastName', 'Doe'],
  ['user-email', 'jdoe@example.com'],
  ['user-title', 'Photo editor'],
  ['user-organization', 'Example Media'],
  ['user-streetAddress', 'Hauptstraße 1, Hinterhaus'],
  ['user-city', 'München'],
  ['user-state', 'BY'],
  ['user-zipCode', '80331'],
  ['user-country', 'Germany'],
  ['user-phone', '+49 89 1234567'],
  ['user-fax', '+49 89 1234568'],
];

export const samples: Partial<Record<ProviderName, Sample[]>> = {
  shopflix: [
    {
      name: 'registration check',
      contentType: json,
      body: Buffer.from('{}'),
      headers: { 'User-Agent': 'Shopflix WebHook Test' },
      unsigned: true,
    },
    { name: 'order delivered (its documented example)', contentType: json, body: file('shopflix-order.json') },
  ],
  proign: [
    {
      name: 'order.shipped (its documented payload)',
      contentType: json,
      body: file('proign-order-shipped.json'),
      headers: { 'X-Proign-Delivery-ID': 'dlv_0001' },
    },
    {
      name: 'order.shipped, first retry',
      contentType: json,
      body: file('proign-order-shipped.json'),
      // Retry requests add X-Proign-Retry-Count, 0 for the first of its five retries.
      headers: { 'X-Proign-Delivery-ID': 'dlv_0002', 'X-Proign-Retry-Count': '0' },
    },
  ],
  fotoweb: [
    { name: 'order submitted, JSON', route: 'order-submitted', contentType: json, body: file('fotoweb-order.json') },
    {
      name: 'order approved, form data',
      route: 'order-approved',
      contentType: 'application/x-www-form-urlencoded; charset=utf-8',
      body: Buffer.from(new URLSearchParams(fotowebFormFields).toString()),
    },
  ],
  printiq: [
    { name: 'CreateJob, JSON', route: 'CreateJob', contentType: json, body: file('printiq-create-job.json') },
    {
      name: 'CreateJobXml, XML',
      route: 'CreateJobXml',
      contentType: 'application/xml',
      body: file('printiq-create-job.xml'),
    },
  ],
  siteflow: [
    { name: 'order shipped', route: 'statusupdate', contentType: json, body: file('siteflow-shipped.json') },
    {
      name: 'order submission error, no Content-Type',
      route: 'ordersubmissionerror',
      body: file('siteflow-submission-error.json'),
    },
  ],
  // The public presets: one typical event each, with the headers the provider's documentation lists.
  'standard-webhooks': [
    {
      name: 'invoice.paid',
      contentType: json,
      body: file('standard-webhooks-invoice-paid.json'),
      headers: { 'webhook-id': 'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W' },
    },
  ],
  github: [
    {
      name: 'push',
      contentType: json,
      body: file('github-push.json'),
      headers: {
        'X-GitHub-Event': 'push',
        'X-GitHub-Delivery': '72d3162e-cc78-11e3-81ab-4c9367dc0958',
        'X-GitHub-Hook-ID': '292430182',
        'User-Agent': 'GitHub-Hookshot/044aadd',
      },
    },
  ],
  stripe: [{ name: 'payment_intent.succeeded', contentType: json, body: file('stripe-payment-intent-succeeded.json') }],
  shopify: [
    {
      name: 'orders/create',
      contentType: json,
      body: file('shopify-orders-create.json'),
      headers: {
        'X-Shopify-Topic': 'orders/create',
        'X-Shopify-Webhook-Id': 'b54557e4-bdd9-4b37-8a5f-bf7d70bcd043',
        'X-Shopify-Shop-Domain': 'example.myshopify.com',
        'X-Shopify-API-Version': '2025-01',
      },
    },
  ],
};

/**
 * The headers a provider adds to sign a request, computed the way its documentation says (not with the
 * receiver's code): PROIGN's Node snippet, Shopflix's `data`-only signature, and the public schemes.
 */
export function providerSignature(
  provider: ProviderName,
  secret: string,
  body: Buffer,
  headers: Record<string, string> = {},
): Record<string, string> {
  const now = Math.floor(Date.now() / 1000);
  switch (provider) {
    case 'proign':
      // crypto.createHmac('sha256', secret).update(JSON.stringify(payload)).digest('hex'), payload = parsed body
      return {
        'X-Proign-Signature': `sha256=${hmac('sha256', Buffer.from(secret), JSON.stringify(JSON.parse(body.toString()))).toString('hex')}`,
      };
    case 'shopflix': {
      const parsed = JSON.parse(body.toString());
      const data = parsed.data ?? parsed.order_data;
      return { 'X-Data-Signature': hmac('sha256', Buffer.from(secret), JSON.stringify(data)).toString('hex') };
    }
    case 'github':
      return { 'X-Hub-Signature-256': `sha256=${hmac('sha256', Buffer.from(secret), body).toString('hex')}` };
    case 'shopify':
      return { 'X-Shopify-Hmac-Sha256': hmac('sha256', Buffer.from(secret), body).toString('base64') };
    case 'stripe':
      return { 'Stripe-Signature': signStripe(Buffer.from(secret), now, body) };
    case 'standard-webhooks': {
      const id = headers['webhook-id'] ?? `msg_${now}`;
      return {
        'webhook-id': id,
        'webhook-timestamp': String(now),
        'webhook-signature': signStandardWebhook(standardWebhookKey(secret), id, now, body),
      };
    }
    default:
      return {};
  }
}
