// The subscription's history streams, as the operator keeps them: the attempt records (while spec.history is
// enabled; deleted when it is turned off) and the replay stream with the subscription's consumer on it, so a
// replay can be queued before a dispatcher runs. Both go with the subscription.
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { replayConsumerConfig } from '../jetstream/consumers.ts';
import { attemptStreamConfig, replayStreamConfig } from '../jetstream/history.ts';
import { attemptStream, replayStream } from '../jetstream/layout.ts';
import { deleteStream } from '../jetstream/streams.ts';
import { type Context, ensureConsumerOf, ensureStreamOf, type RawResource } from './context.ts';

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
    await ensureStreamOf(ctx, raw, replayStreamConfig(namespace, name, replicas));
    return await ensureConsumerOf(ctx, raw, replayStream(namespace, name), replayConsumerConfig(namespace, name, spec));
  };
  const [, consumer] = await Promise.all([attempts, replay()]);
  return consumer;
}

export async function deleteHistoryStreams(ctx: Context, namespace: string, name: string) {
  await deleteStream(ctx.jsm, attemptStream(namespace, name));
  await deleteStream(ctx.jsm, replayStream(namespace, name));
}
