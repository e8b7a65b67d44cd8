// The subscription's history streams, as the operator keeps them: the attempt records (while spec.history is
// enabled; deleted when it is turned off) and the replay stream with the subscription's consumer on it. The replay
// stream is made at the subscription's first replay request, before anything is queued there (so a replay can be
// queued before a dispatcher runs), and kept in step with the spec from then on: most subscriptions are never
// replayed, and each stream and consumer is one more JetStream object (in a cluster, one more Raft group). Both go
// with the subscription.
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { replayConsumerConfig } from '../jetstream/consumers.ts';
import { attemptStreamConfig, replayStreamConfig } from '../jetstream/history.ts';
import { attemptStream, replayStream } from '../jetstream/layout.ts';
import { deleteStream, isStreamNotFound } from '../jetstream/streams.ts';
import { type Context, ensureConsumerOf, ensureStreamOf, type RawResource } from './context.ts';

/** The attempt records' stream, and the replay stream if there is one; resolves to the replay consumer, if any. */
export async function ensureHistoryStreams(
  ctx: Context,
  raw: RawResource,
  spec: WebhookSubscriptionSpec,
  replicas: number,
) {
  const { namespace, name } = raw.metadata;
  const attempts = spec.history.enabled
    ? ensureStreamOf(ctx, raw, attemptStreamConfig(namespace, name, spec.history, replicas))
    : deleteStream(ctx.jsm, attemptStream(namespace, name));
  const replay = async () => {
    const made = await ctx.jsm.streams.info(replayStream(namespace, name)).then(
      () => true,
      (err: unknown) => {
        if (isStreamNotFound(err)) return false;
        throw err;
      },
    );
    return made ? await ensureReplayStream(ctx, raw, spec, replicas) : undefined;
  };
  const [, consumer] = await Promise.all([attempts, replay()]);
  return consumer;
}

/** The replay stream and the subscription's consumer on it, made or updated in place. */
export async function ensureReplayStream(
  ctx: Context,
  raw: RawResource,
  spec: WebhookSubscriptionSpec,
  replicas: number,
) {
  const { namespace, name } = raw.metadata;
  await ensureStreamOf(ctx, raw, replayStreamConfig(namespace, name, replicas));
  return await ensureConsumerOf(ctx, raw, replayStream(namespace, name), replayConsumerConfig(namespace, name, spec));
}

export async function deleteHistoryStreams(ctx: Context, namespace: string, name: string) {
  await deleteStream(ctx.jsm, attemptStream(namespace, name));
  await deleteStream(ctx.jsm, replayStream(namespace, name));
}
