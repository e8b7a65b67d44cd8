// Carries out a replay request (the hookyard.io/replay annotation): selects the events it names, from the
// dead-letter stream or the sources' streams (or makes up a test event), and queues a copy of each in the
// subscription's replay stream, where the dispatcher takes them through the subscription's normal path (filter,
// format, signing, retries, dead letters), marked with the request id. The operator itself never sends anything:
// it needs no Secret and no route to the target. A purge deletes the dead letters instead of queueing them.
// Progress (the replay stream emptying) and the result go to status.replay and to Events.
import { JetStreamApiCodes, JetStreamApiError, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import { type MsgHdrs, headers as natsHeaders } from '@nats-io/transport-node';
import {
  parseReplayRequest,
  type ReplayRequest,
  type ReplayStatus,
  replayAnnotation,
  replayLimit,
} from '../api/replay.ts';
import type { Source } from '../api/sources.ts';
import type { WebhookSubscription } from '../api/webhook-subscription.ts';
import { storedEvent } from '../dispatcher/event.ts';
import { compileFilter } from '../filter/cel.ts';
import { readStream } from '../history/read.ts';
import { consumerConfig, subjectMatches } from '../jetstream/consumers.ts';
import {
  deadLetterStream,
  endpointOfStream,
  endpointStream,
  eventFilterSubject,
  eventSubject,
  headers as h,
  replayStream,
  replaySubject,
} from '../jetstream/layout.ts';
import { clearDeadKeys } from '../jetstream/ordering.ts';
import type { Context, RawResource } from './context.ts';
import { ensureReplayStream } from './history.ts';

/** How many selected events status lists. */
const listed = 100;

interface Selected {
  /** Where the event is stored (for a test event: the source it stands for, with sequence 0). */
  stream: string;
  seq: number;
  data: Uint8Array;
  headers: MsgHdrs | undefined;
  id: string;
  type: string;
  receivedAt: string | undefined;
}

/** What a replay selected: how many, and the first `listed` of them for status. Bodies are not kept. */
interface Selection {
  count: number;
  events: { id: string; type: string; receivedAt: string | undefined }[];
}

/**
 * The replay status to write: a new request carried out (or refused), one in progress looked at again, or the
 * last one's as it was. Never throws for a bad request; NATS trouble throws, and the reconcile retries.
 */
export async function reconcileReplay(
  ctx: Context,
  raw: RawResource,
  subscription: WebhookSubscription,
  sources: Source[],
  /** Of the replay stream, made here before the first copy is queued (src/operator/history.ts). */
  replicas: number,
): Promise<ReplayStatus | undefined> {
  const previous = raw.status?.replay as ReplayStatus | undefined;
  const text = raw.metadata.annotations?.[replayAnnotation];
  if (text === undefined) return previous;
  const parsed = parseReplayRequest(text);
  if ('problem' in parsed) {
    if (previous?.phase === 'Failed' && previous.message === parsed.problem) return previous;
    await event(ctx, raw, 'Warning', 'ReplayInvalid', parsed.problem);
    return { id: parsed.id, phase: 'Failed', message: parsed.problem, completedAt: now() };
  }
  const { request } = parsed;
  if (previous?.id === request.id) {
    if (previous.phase === 'Sending') return await progress(ctx, raw, previous);
    finished.delete(raw.metadata.uid ?? ''); // the cache has the status written: nothing more to remember
    return previous;
  }

  const startedAt = now();
  const namespace = raw.metadata.namespace;
  const name = raw.metadata.name;
  if (!request.dryRun && !request.purgeDeadLetters) await ensureReplayStream(ctx, raw, subscription.spec, replicas);
  // Each event is queued (or, for a purge, deleted) as it is read, so a request holds one body at a time.
  const send = async (s: Selected) => {
    if (!request.purgeDeadLetters) await queue(ctx.jsm.jetstream(), namespace, name, request.id, s);
    // The copy is safe in the replay stream (PubAck), so the dead letter goes: one that fails again comes back.
    if (request.deadLetters || request.purgeDeadLetters)
      await ctx.jsm.streams.deleteMessage(s.stream, s.seq).catch(ignoreGone);
  };
  let selection: Selection;
  if (request.test) {
    const made = await testEvent(subscription, sources, request.id, request.test);
    if ('problem' in made) {
      await event(ctx, raw, 'Warning', 'ReplayInvalid', made.problem);
      return { id: request.id, phase: 'Failed', message: made.problem, startedAt, completedAt: now() };
    }
    if (!request.dryRun) await send(made);
    selection = { count: 1, events: [{ id: made.id, type: made.type, receivedAt: made.receivedAt }] };
  } else selection = await select(ctx, subscription, sources, request, request.dryRun ? undefined : send);
  const { count, events } = selection;
  const cut = count >= replayLimit ? ` (the first ${replayLimit}: ask again for the rest)` : '';
  const allDeadLettersTaken = (request.deadLetters || request.purgeDeadLetters) && !request.dryRun && !cut;
  // With DeadLetterRest, the keys that had a dead letter take live events again; a replayed copy that fails for
  // good marks its key anew.
  if (allDeadLettersTaken && subscription.spec.ordering?.onDeadLetter === 'DeadLetterRest') {
    await clearDeadKeys(ctx.jsm, namespace, name);
  }
  if (request.purgeDeadLetters) {
    const message = request.dryRun
      ? `Dry run: ${count} dead letters would be purged${cut}; nothing was deleted.`
      : `${count} dead letters purged${cut}; nothing was sent.`;
    await event(ctx, raw, 'Normal', request.dryRun ? 'ReplayDryRun' : 'DeadLettersPurged', message);
    const phase = request.dryRun ? 'DryRun' : 'Succeeded';
    return { id: request.id, phase, selected: count, events, message, startedAt, completedAt: now() };
  }
  if (request.dryRun) {
    const message = `Dry run: ${count} events would be sent again${cut}; nothing was sent.`;
    await event(ctx, raw, 'Normal', 'ReplayDryRun', message);
    return { id: request.id, phase: 'DryRun', selected: count, events, message, startedAt, completedAt: now() };
  }
  const message = `${count} events queued to be sent again${cut}.`;
  await event(ctx, raw, 'Normal', 'ReplayStarted', message);
  ctx.log.info({ namespace, subscription: name, replay: request.id, events: count }, 'replay queued');
  return await progress(ctx, raw, { id: request.id, phase: 'Sending', selected: count, events, message, startedAt });
}

/** A replay being sent is done when the replay stream is empty: every copy delivered or dead-lettered again. */
/**
 * Replays this operator saw finish, by resource uid, until its cache shows the status written: a reconcile that
 * still reads phase Sending from the cache must not announce the end a second time.
 */
const finished = new Map<string, ReplayStatus>();

async function progress(ctx: Context, raw: RawResource, status: ReplayStatus): Promise<ReplayStatus> {
  const uid = raw.metadata.uid ?? '';
  const done = finished.get(uid);
  if (done && done.id === status.id) return done;
  const info = await ctx.jsm.streams.info(replayStream(raw.metadata.namespace, raw.metadata.name));
  const remaining = info.state.messages;
  if (remaining > 0) return { ...status, remaining };
  const message = `${status.selected} events sent again; any that failed for good are dead letters again (status.deadLettered, hookyard attempts).`;
  await event(ctx, raw, 'Normal', 'ReplaySucceeded', message);
  const succeeded: ReplayStatus = { ...status, phase: 'Succeeded', remaining: 0, message, completedAt: now() };
  finished.set(uid, succeeded);
  return succeeded;
}

/**
 * The events a request names, at most `replayLimit`, those the filter would skip left out: dead letters oldest
 * first, else each source's events oldest first. Each is handed to `send` (none for a dry run) as it is read.
 */
async function select(
  ctx: Context,
  subscription: WebhookSubscription,
  sources: Source[],
  request: ReplayRequest,
  send?: (s: Selected) => Promise<void>,
): Promise<Selection> {
  const { spec } = subscription;
  const namespace = subscription.metadata.namespace ?? 'default';
  const name = subscription.metadata.name;
  const filter = spec.filter ? compileFilter(spec.filter) : undefined;
  const selection: Selection = { count: 0, events: [] };
  const take = async (stream: string, msg: JsMsg, endpoint: string) => {
    const event = storedEvent({ data: msg.data, headers: msg.headers, receivedAt: msgTime(msg) }, endpoint);
    // A purge takes every dead letter, whether or not the filter (changed since) would pass it now.
    const skipped = filter && !filter({ type: event.type, headers: event.originalHeaders, body: await event.view() });
    if (skipped && !request.purgeDeadLetters) return;
    const { data, headers, seq } = msg;
    const selected = { stream, seq, data, headers, id: event.id, type: event.type, receivedAt: event.receivedAt };
    await send?.(selected);
    selection.count++;
    if (selection.events.length < listed)
      selection.events.push({ id: selected.id, type: selected.type, receivedAt: selected.receivedAt });
  };

  if (request.deadLetters || request.purgeDeadLetters) {
    const stream = deadLetterStream(namespace, name);
    for await (const msg of readStream(ctx.jsm.jetstream(), stream, { limit: replayLimit })) {
      await take(stream, msg, endpointOfStream(msg.headers?.get(h.sourceStream) ?? ''));
    }
    return selection;
  }
  const wanted = new Set(request.eventIds ?? []);
  const since = request.since ? new Date(request.since) : undefined;
  const until = request.until ? Date.parse(request.until) : Number.POSITIVE_INFINITY;
  for (const source of sources) {
    const stream = endpointStream(namespace, source.endpoint);
    const filterSubjects = consumerConfig(namespace, name, source.endpoint, spec).filter_subjects;
    const patterns = spec.eventTypes.map((p) => eventFilterSubject(namespace, source.endpoint, p));
    for await (const msg of readStream(ctx.jsm.jetstream(), stream, { filterSubjects, since })) {
      if (msgTime(msg).getTime() >= until || selection.count >= replayLimit) break;
      if (!patterns.some((p) => subjectMatches(p, msg.subject))) continue;
      if (wanted.size > 0 && !wanted.has(msg.headers?.get(h.eventId) ?? '')) continue;
      await take(stream, msg, `${namespace}/${source.endpoint}`);
    }
  }
  return selection;
}

/**
 * A copy of the event in the replay stream: its headers without Nats-* (they steer a publish), its id, receive
 * time and origin named as on a dead letter, and the request id. The message id makes a request carried out again
 * (the operator restarted before writing status) queue nothing twice.
 */
async function queue(js: JetStreamClient, namespace: string, name: string, replay: string, s: Selected) {
  const headers = copyHeaders(s.headers);
  headers.set(h.deadLetterEventId, s.id);
  if (s.receivedAt) headers.set(h.receivedAt, s.receivedAt);
  if (!headers.has(h.sourceStream)) {
    headers.set(h.sourceStream, s.stream);
    headers.set(h.sourceSequence, String(s.seq));
  }
  headers.set(h.replay, replay);
  await js.publish(replaySubject(namespace, name), s.data, {
    msgID: `${replay}:${s.stream}:${s.seq}`,
    headers,
  });
}

function copyHeaders(original: MsgHdrs | undefined): MsgHdrs {
  const out = natsHeaders();
  for (const key of original?.keys() ?? []) {
    if (key.toLowerCase().startsWith('nats-')) continue;
    for (const value of original?.values(key) ?? []) out.append(key, value);
  }
  return out;
}

/** A dead letter deleted meanwhile (a replay took it, its maxAge passed) is purged already. */
function ignoreGone(err: unknown) {
  if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.NoMessageFound)) throw err;
}

/**
 * The test event a `test` request sends: made up here, as if the subscription's first source had received it, with
 * the id `hookyard-test:<request id>` and the Hookyard-Test header; refused when the subscription would not send it
 * (its event types or its filter leave it out), so a test never looks sent when it was skipped.
 */
async function testEvent(
  subscription: WebhookSubscription,
  sources: Source[],
  requestId: string,
  test: NonNullable<ReplayRequest['test']>,
): Promise<Selected | { problem: string }> {
  const namespace = subscription.metadata.namespace ?? 'default';
  const { spec } = subscription;
  const source = sources[0];
  if (!source) return { problem: 'the subscription has no source to send a test event from' };
  const type = test.type ?? 'hookyard.test';
  const id = `hookyard-test:${requestId}`;
  const receivedAt = new Date().toISOString();
  const body = test.body === undefined ? { type, id, test: true, createdAt: receivedAt } : test.body;
  const data = new TextEncoder().encode(JSON.stringify(body));
  const headers = natsHeaders();
  headers.set(h.eventType, type);
  headers.set(h.contentType, 'application/json');
  headers.set(h.test, 'true');
  const stream = endpointStream(namespace, source.endpoint);
  headers.set(h.sourceStream, stream);
  const subject = eventSubject(namespace, source.endpoint, type);
  const patterns = spec.eventTypes.map((p) => eventFilterSubject(namespace, source.endpoint, p));
  if (!patterns.some((p) => subjectMatches(p, subject)))
    return { problem: `test: the type "${type}" is not among spec.eventTypes (${spec.eventTypes.join(', ')})` };
  const filter = spec.filter ? compileFilter(spec.filter) : undefined;
  const event = storedEvent({ data, headers }, `${namespace}/${source.endpoint}`);
  if (filter && !filter({ type, headers: event.originalHeaders, body: await event.view() }))
    return { problem: 'test: spec.filter skips this test event; give a type and a body that it passes' };
  return { stream, seq: 0, data, headers, id, type, receivedAt };
}

const msgTime = (msg: JsMsg) => new Date(msg.info.timestampNanos / 1e6);
const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

async function event(ctx: Context, raw: RawResource, type: 'Normal' | 'Warning', reason: string, message: string) {
  await ctx.kube.event(raw, type, reason, message).catch((err: unknown) => {
    ctx.log.warn({ err: String(err) }, 'could not record an Event');
  });
}
