import { type JetStreamManager, jetstream, jetstreamManager, type StoredMsg } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { requireEnv } from './kube.ts';

export async function testNats(url = requireEnv('HOOKYARD_TEST_NATS_URL')) {
  const nc: NatsConnection = await connect({ servers: url });
  return { nc, js: jetstream(nc), jsm: await jetstreamManager(nc) };
}

/** Every message in a stream, oldest first. */
export async function streamMessages(jsm: JetStreamManager, stream: string): Promise<StoredMsg[]> {
  const info = await jsm.streams.info(stream);
  const messages: StoredMsg[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (m) messages.push(m);
  }
  return messages;
}
