// Provider presets as data: what each provider's own documentation says about how it sends webhooks. A
// ProviderEndpoint's spec overrides any of it. Where a document is vague, the preset says so in a comment and the
// field stays configurable.
import type { HmacVerification, ProviderEndpointSpec, ProviderName } from '../api/provider-endpoint.ts';

type Spec = ProviderEndpointSpec;

export interface Preset {
  /** Defaults for an `hmac` verification entry (its secretRefs always come from the spec). */
  hmac?: Omit<HmacVerification, 'secretRefs' | 'secret'>;
  eventType: NonNullable<Spec['eventType']>;
  dedup: Omit<NonNullable<Spec['dedup']>, 'window'>;
  /** The default dedup window when a provider's retries last longer than a day. */
  dedupWindow?: string;
  /** Status for an accepted event. */
  status: number;
  registrationCheck?: { header: string; value: string };
  routes?: NonNullable<Spec['routes']>;
  fallbackContentType?: 'json' | 'form' | 'xml';
  /** Header whose presence marks a provider's retry (counted, and stored). */
  retryHeader?: string;
  /** Header with the provider's id of one delivery attempt: logged when the attempt is a duplicate. */
  deliveryHeader?: string;
}

/** printIQ's 29 webhook events; CreateJobXml and UpdateJobStatus_Xml send XML, the others JSON. */
export const printiqEvents = [
  'CreateCustomer',
  'CreateCustomerContact',
  'CreateCustomerAddress',
  'CreateQuote',
  'CreateJob',
  'CompleteJob',
  'RejectQuote',
  'ExpireQuote',
  'DiscardQuote',
  'ExportInvoice',
  'FailCxmlJob',
  'ExportPurchaseOrder',
  'FailXMPieJob',
  'CreateJobXml',
  'UpdateJobStatus',
  'UpdateDispatchStatus',
  'RequestQuoteApproval',
  'UpdateOrderStatus',
  'CompleteOrder',
  'InventoryPOStatusChange',
  'OutsourcePOStatusChange',
  'InventoryTransactionInserted',
  'UpdateJobStatus_Xml',
  'AcceptQuote',
  'CreateConsignment',
  'AcceptanceCreated',
  'SalesItemUpdated',
  'ProductUpdated',
  'UpdateSalesOrderStatusLine',
] as const;

/**
 * How long a dedup key is remembered when the endpoint does not say. A day covers providers' resends of an event
 * they identify. A body hash cannot tell a resend from the same event happening again (a status set twice), so
 * its window is an hour: long enough for a sender's quick retries after a timeout or a 503 (PROIGN's first three
 * come after 1, 5 and 30 minutes), short enough that a real repeat an hour later is stored again.
 */
export function dedupWindow(spec: Pick<Spec, 'provider' | 'dedup'>): string {
  if (spec.dedup?.window) return spec.dedup.window;
  const preset = presets[spec.provider];
  if (preset?.dedupWindow && !spec.dedup?.source) return preset.dedupWindow;
  // A spec without a provider (a stream set up by hand, as in tests) keeps the day.
  return (spec.dedup?.source ?? presets[spec.provider]?.dedup.source) === 'bodyHash' ? '1h' : '24h';
}

export const presets: Record<ProviderName, Preset> = {
  // HP Site Flow triggers post user-written JSON templates to two endpoints; no signature scheme, no event id, and
  // a missing Content-Type: application/json is a documented common mistake, so bodies default to JSON.
  siteflow: {
    eventType: { source: 'route' },
    dedup: { source: 'bodyHash' },
    status: 200,
    routes: [{ path: 'statusupdate' }, { path: 'ordersubmissionerror' }],
    fallbackContentType: 'json',
  },
  // PROIGN: X-Proign-Signature = "sha256=" + hex HMAC-SHA256 of JSON.stringify(payload), the parsed body
  // re-serialized (its Node snippet); envelope {id, type, timestamp, tenant_id, data}; id is stable across retries.
  proign: {
    hmac: {
      header: 'X-Proign-Signature',
      algorithm: 'sha256',
      encoding: 'hex',
      prefix: 'sha256=',
      signedContent: 'json',
    },
    eventType: { source: 'body', bodyPaths: ['type'] },
    dedup: { source: 'body', bodyPaths: ['id'] },
    // Its last retry comes 26 h 36 min after the first delivery (1m + 5m + 30m + 2h + 24h): a day would store it
    // again.
    dedupWindow: '48h',
    status: 200,
    // Its document lists X-Proign-Retry-Count among the headers that retry requests add, numbered 0-4 for its five
    // retries (1m, 5m, 30m, 2h, 24h): 0 is the first retry, so the header's presence marks a retry.
    retryHeader: 'X-Proign-Retry-Count',
    deliveryHeader: 'X-Proign-Delivery-ID',
  },
  // printIQ signs nothing; its team links each event to a URL, so each event is a route and names the type.
  printiq: {
    eventType: { source: 'route' },
    dedup: { source: 'bodyHash' },
    status: 200,
    routes: printiqEvents.map((path) => ({ path })),
  },
  // Shopflix: X-Data-Signature over the `data` object only; the hash and encoding are not documented (hex
  // HMAC-SHA256 assumed; configurable). Its reference says `data` and `eventType` at the top, but its own example
  // has `order_data` with the type inside and the misspelled `order.deliverd`: both shapes are read. Dedup key:
  // eventType + order id + eventTime, as it recommends (its example has no eventTime, only
  // timestamp_webhook_creation). Only HTTP 200 counts as success.
  shopflix: {
    hmac: {
      header: 'X-Data-Signature',
      algorithm: 'sha256',
      encoding: 'hex',
      signedContent: 'jsonField',
      jsonPaths: ['data', 'order_data'],
    },
    eventType: {
      source: 'body',
      bodyPaths: ['eventType', 'data.eventType', 'order_data.eventType'],
      aliases: { 'order.deliverd': 'order.delivered' },
    },
    dedup: {
      source: 'body',
      // The key starts with the (aliased) event type already, so eventType itself is not repeated here.
      bodyPaths: ['data.id|order_data.id', 'eventTime|timestamp_webhook_creation'],
    },
    status: 200,
    registrationCheck: { header: 'User-Agent', value: 'Shopflix WebHook Test' },
  },
  // FotoWeb: JSON {data, type: "order", id, created} or form fields (id, href, state, ...); cart changed, order
  // submitted and order approved are separate webhooks (routes); resends reuse `id`; 204 preferred.
  fotoweb: {
    eventType: { source: 'route' },
    dedup: { source: 'body', bodyPaths: ['id'] },
    status: 204,
    routes: [
      { path: 'cart-changed', eventType: 'cart.changed' },
      { path: 'order-submitted', eventType: 'order.submitted' },
      { path: 'order-approved', eventType: 'order.approved' },
    ],
  },
  'standard-webhooks': {
    eventType: { source: 'body', bodyPaths: ['type'] },
    dedup: { source: 'header', header: 'webhook-id' },
    status: 200,
  },
  github: {
    hmac: {
      header: 'X-Hub-Signature-256',
      algorithm: 'sha256',
      encoding: 'hex',
      prefix: 'sha256=',
      signedContent: 'body',
    },
    eventType: { source: 'header', header: 'X-GitHub-Event' },
    dedup: { source: 'header', header: 'X-GitHub-Delivery' },
    status: 200,
  },
  stripe: {
    eventType: { source: 'body', bodyPaths: ['type'] },
    dedup: { source: 'body', bodyPaths: ['id'] },
    status: 200,
  },
  shopify: {
    hmac: { header: 'X-Shopify-Hmac-Sha256', algorithm: 'sha256', encoding: 'base64', signedContent: 'body' },
    eventType: { source: 'header', header: 'X-Shopify-Topic' },
    dedup: { source: 'header', header: 'X-Shopify-Webhook-Id' },
    status: 200,
  },
  generic: {
    eventType: { source: 'constant', value: 'webhook' },
    dedup: { source: 'bodyHash' },
    status: 200,
  },
};
