// Every way a request can end, mapped to its HTTP status and metric outcome in this one place.

export const outcomes = [
  'accepted',
  'duplicate',
  'bad_signature',
  'unauthorized',
  'invalid_payload',
  'too_large',
  'unsupported_media_type',
  'registration_check',
  'unavailable',
] as const;
export type Outcome = (typeof outcomes)[number];

const statusOf = {
  bad_signature: 401,
  unauthorized: 401,
  forbidden: 403,
  invalid_payload: 400,
  too_large: 413,
  unsupported_media_type: 415,
  not_found: 404,
  method_not_allowed: 405,
  unavailable: 503,
} as const;
export type Refusal = keyof typeof statusOf;

/** A request the receiver refuses; `message` goes to the client, so it never carries a secret. */
export class Refused extends Error {
  override name = 'Refused';
  readonly kind: Refusal;
  constructor(kind: Refusal, message: string) {
    super(message);
    this.kind = kind;
  }
  get status(): number {
    return statusOf[this.kind];
  }
  /** The metric outcome; refusals that name no known endpoint (404, 405) are not counted per endpoint. */
  get outcome(): Outcome | undefined {
    if (this.kind === 'forbidden') return 'unauthorized';
    if (this.kind === 'not_found' || this.kind === 'method_not_allowed') return undefined;
    return this.kind;
  }
}
