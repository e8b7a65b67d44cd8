// A replay request: what a user (or `hookyard replay`) writes on a WebhookSubscription as the annotation
// hookyard.io/replay, a JSON object, for the operator to carry out. An annotation rather than a spec field: asking
// for a replay is an act, not a desired state, and it must not change the dispatcher's config (a rollout).
import { z } from 'zod';

export const replayAnnotation = 'hookyard.io/replay';

/** At most this many events per request; a larger selection is cut there, and status says so. */
export const replayLimit = 10_000;

const example = `{"id":"r1","deadLetters":true}, {"id":"r2","eventIds":["order.shipped:evt_1"]}, {"id":"r3","since":"2026-12-01T10:00:00Z","until":"2026-12-01T11:00:00Z"}, {"id":"p1","purgeDeadLetters":true} or {"id":"t1","test":{}}`;

const time = z.iso.datetime({ offset: true, message: 'must be an RFC 3339 time such as 2026-12-01T10:00:00Z' });

export const replayRequest = z
  .object({
    id: z
      .string()
      .regex(
        /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/,
        'must be a request id of lowercase letters, digits and -, such as r1',
      )
      .meta({ description: 'The request id: a request is carried out once per id.' }),
    deadLetters: z.literal(true).optional().meta({ description: 'Every dead letter, each removed once queued.' }),
    eventIds: z.array(z.string().min(1).max(1024)).min(1).max(1000).optional().meta({
      description: 'These events (as Hookyard-Event-Id shows them), from the sources’ streams.',
    }),
    since: time.optional().meta({ description: 'Every event of the sources received at or after this time.' }),
    until: time.optional().meta({ description: 'With since: and before this time (default: now).' }),
    purgeDeadLetters: z
      .literal(true)
      .optional()
      .meta({ description: 'Deletes every dead letter, sending nothing (a dry run lists them).' }),
    test: z
      .object({
        type: z.string().min(1).max(256).optional().meta({ description: 'The event type (default: hookyard.test).' }),
        body: z.unknown().optional().meta({ description: 'The JSON body (default: a small test object).' }),
      })
      .strict()
      .optional()
      .meta({ description: 'Sends one test event, made up by the operator, through the normal path.' }),
    dryRun: z.boolean().default(false).meta({ description: 'true: only list what would be sent; send nothing.' }),
  })
  .strict()
  .superRefine((r, ctx) => {
    const kinds = [r.deadLetters, r.eventIds, r.since, r.purgeDeadLetters, r.test].filter((k) => k !== undefined);
    if (kinds.length !== 1)
      ctx.addIssue({
        code: 'custom',
        message: `set exactly one of deadLetters, eventIds, since, purgeDeadLetters and test, such as ${example}`,
      });
    if (r.until && !r.since) ctx.addIssue({ code: 'custom', path: ['until'], message: 'until goes with since' });
    if (r.since && r.until && Date.parse(r.until) <= Date.parse(r.since))
      ctx.addIssue({ code: 'custom', path: ['until'], message: 'until must be after since' });
  });

export type ReplayRequest = z.infer<typeof replayRequest>;

/** The request in the annotation, or what is wrong with it (one line, naming what to type). */
export function parseReplayRequest(text: string): { request: ReplayRequest } | { problem: string; id?: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { problem: `${replayAnnotation} must be a JSON object, such as ${example}` };
  }
  const parsed = replayRequest.safeParse(value);
  if (parsed.success) return { request: parsed.data };
  const id = typeof (value as { id?: unknown })?.id === 'string' ? (value as { id: string }).id : undefined;
  const problems = parsed.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message));
  return { problem: `${replayAnnotation}: ${problems.join('; ')}`, id };
}

export const replayStatus = z
  .object({
    id: z.string().optional().meta({ description: 'The request id of the replay last asked for.' }),
    phase: z.enum(['Sending', 'Succeeded', 'DryRun', 'Failed']).meta({
      description:
        'Sending: queued, the dispatcher is sending; Succeeded: all sent; DryRun: listed only; Failed: see message.',
    }),
    selected: z.number().int().optional().meta({ description: 'Events the request selected (after the filter).' }),
    remaining: z.number().int().optional().meta({ description: 'Replayed events the dispatcher has not finished.' }),
    events: z
      .array(
        z.object({
          id: z.string().meta({ description: 'The event id (Hookyard-Event-Id).' }),
          type: z.string().meta({ description: 'The event type.' }),
          receivedAt: z.string().optional().meta({ description: 'When the receiver stored it.' }),
        }),
      )
      .optional()
      .meta({ description: 'The selected events (the first 100): what a dry run would send.' }),
    message: z.string().optional().meta({ description: 'What was done, or what is wrong with the request.' }),
    startedAt: z.string().optional().meta({ format: 'date-time', description: 'When the operator took the request.' }),
    completedAt: z
      .string()
      .optional()
      .meta({ format: 'date-time', description: 'When the replay was done (sent, listed or refused).' }),
  })
  .meta({ description: 'The last replay asked for with the hookyard.io/replay annotation.' });

export type ReplayStatus = z.infer<typeof replayStatus>;
