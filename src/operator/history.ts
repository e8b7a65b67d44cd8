// The subscription's history streams, as the operator keeps them: the attempt records (while spec.history is
// enabled; deleted when it is turned off) and the replay stream with the subscription's consumer on it, so a
// replay can be queued before a dispatcher runs. Both go with the subscription.
import type { WebhookSubscriptionSpec } from '../api/webhook-subscription.ts';
import { ensureConsumer, replayConsumerConfig } from '../jetstream/consumers.ts';
import { attemptStreamConfig, replayStreamConfig } from '../jetstream/history.ts';
import { attemptStream, replayStream } from '../jetstream/layout.ts';
import { deleteStream, ensureStream } from '../jetstream/streams.ts';
import type { Context } from './context.ts';

export async function ensureHistoryStreams(
  ctx: Context,
  namespace: string,
  name: string,
  spec: WebhookSubscriptionSpec,
  replicas: number,
) {
  if (spec.history.enabled) await ensureStream(ctx.jsm, attemptStreamConfig(namespace, name, spec.history, replicas));
  else await deleteStream(ctx.jsm, attemptStream(namespace, name));
  await ensureStream(ctx.jsm, replayStreamConfig(namespace, name, replicas));
  return await ensureConsumer(ctx.jsm, replayStream(namespace, name), replayConsumerConfig(namespace, name, spec));
}

export async function deleteHistoryStreams(ctx: Context, namespace: string, name: string) {
  await deleteStream(ctx.jsm, attemptStream(namespace, name));
  await deleteStream(ctx.jsm, replayStream(namespace, name));
}
