// Which nats-server dev mode starts when no --nats-url is given: HOOKYARD_NATS_SERVER, else one on the PATH that
// is new enough, else the one `make tools` builds into .cache/bin.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** The oldest nats-server dev mode starts: the minor version `make tools` builds and the tests run against. */
export const minimumNatsServer = [2, 12] as const;

const cachedBinary = join(import.meta.dirname, '../../.cache/bin/nats-server');

export class NoNatsServer extends Error {
  override name = 'NoNatsServer';
}

/** The version `<binary> --version` reports (`nats-server: v2.12.15`), or undefined if it cannot run. */
export function natsServerVersion(binary: string): number[] | undefined {
  try {
    const text = execFileSync(binary, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).toString();
    const match = /v?(\d+)\.(\d+)\.(\d+)/.exec(text);
    return match ? match.slice(1).map(Number) : undefined;
  } catch {
    return undefined;
  }
}

const newEnough = (v: number[] | undefined) =>
  v !== undefined &&
  ((v[0] ?? 0) > minimumNatsServer[0] || ((v[0] ?? 0) === minimumNatsServer[0] && (v[1] ?? 0) >= minimumNatsServer[1]));

/** The nats-server to start; throws NoNatsServer, saying what to install or pass, when there is none. */
export function findNatsServer(): string {
  const chosen = process.env.HOOKYARD_NATS_SERVER;
  if (chosen) return chosen;
  const onPath = natsServerVersion('nats-server');
  if (newEnough(onPath)) return 'nats-server';
  if (existsSync(cachedBinary) && newEnough(natsServerVersion(cachedBinary))) return cachedBinary;
  const minimum = minimumNatsServer.join('.');
  const found = onPath ? `the nats-server on the PATH is v${onPath.join('.')}` : 'no nats-server is on the PATH';
  throw new NoNatsServer(
    `${found}, and .cache/bin/nats-server is not built; dev mode needs nats-server ${minimum} or newer. Either:\n` +
      `  install it (https://docs.nats.io/running-a-nats-service/introduction/installation), for example\n` +
      '    go install github.com/nats-io/nats-server/v2@latest   or   brew install nats-server\n' +
      '  or build the cached one with Go: make tools (scripts/build-tools.sh nats-server)\n' +
      '  or pass --nats-url nats://HOST:4222, a NATS server with JetStream enabled',
  );
}
