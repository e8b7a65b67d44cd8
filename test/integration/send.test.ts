// `hookyard send` for every preset with samples: run as a user runs it, against dev mode serving the examples and
// one endpoint per public preset, each signed with the secret from the manifests and accepted.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import type { ProviderName } from '../../src/api/provider-endpoint.ts';
import { type Dev, startDev } from '../../src/dev/dev.ts';
import { samples } from '../../src/providers/samples.ts';
import { freePort } from '../../src/runtime/net.ts';
import { root, tempDir } from '../harness/servers.ts';

const publicPresets = `
apiVersion: v1
kind: Secret
metadata: {name: public-webhooks}
stringData:
  github: github-dev-secret
  shopify: shopify-dev-secret
  stripe: whsec_c3RyaXBlLWRldi1zZWNyZXQ=
  standard: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
---
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: {name: github}
spec: {provider: github, verification: [{hmac: {secretRefs: [{name: public-webhooks, key: github}]}}]}
---
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: {name: shopify}
spec: {provider: shopify, verification: [{hmac: {secretRefs: [{name: public-webhooks, key: shopify}]}}]}
---
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: {name: stripe}
spec: {provider: stripe, verification: [{stripe: {secretRefs: [{name: public-webhooks, key: stripe}]}}]}
---
apiVersion: hookyard.io/v1alpha1
kind: ProviderEndpoint
metadata: {name: standard-webhooks}
spec:
  provider: standard-webhooks
  verification: [{standardWebhooks: {secretRefs: [{name: public-webhooks, key: standard}]}}]
`;

function send(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((ok) =>
    execFile(process.execPath, [join(root, 'src/cli.ts'), 'send', ...args], (err, stdout, stderr) =>
      ok({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

describe('hookyard send', () => {
  const work = tempDir('hookyard-send-');
  let dev: Dev;
  before(async () => {
    cpSync(join(root, 'examples'), work.path, { recursive: true });
    writeFileSync(join(work.path, 'public.yaml'), publicPresets);
    // Its own nats-server, so the samples' event ids are new to it and no other test sees them.
    dev = await startDev({
      paths: [work.path],
      port: 0,
      host: '127.0.0.1',
      log: pino({ level: 'silent' }),
    });
  });
  after(async () => {
    await dev.stop();
    work.remove();
  });

  const secret = (name: string, key: string) => dev.manifests.secrets.get(name, key)?.toString() ?? '';
  /** How each endpoint of the manifests is authenticated: a signing secret, a token, or a source address. */
  const credentials: Record<ProviderName, () => string[]> = {
    shopflix: () => ['--secret', secret('shopflix-webhook', 'secret')],
    proign: () => ['--secret', secret('proign-webhook', 'secret')],
    fotoweb: () => ['-H', 'X-Forwarded-For: 203.0.113.7'],
    printiq: () => [],
    siteflow: () => ['-H', `X-Hookyard-Token: ${secret('siteflow-webhook', 'token')}`],
    github: () => ['--secret', secret('public-webhooks', 'github')],
    shopify: () => ['--secret', secret('public-webhooks', 'shopify')],
    stripe: () => ['--secret', secret('public-webhooks', 'stripe')],
    'standard-webhooks': () => ['--secret', secret('public-webhooks', 'standard')],
    generic: () => [],
  };
  const url = (provider: string) =>
    `http://127.0.0.1:${dev.port}/hooks/default/${provider}${provider === 'printiq' ? `?token=${secret('printiq-webhook', 'token')}` : ''}`;

  for (const provider of Object.keys(samples) as ProviderName[]) {
    it(`sends every ${provider} sample, signed as ${provider} signs, and each is accepted`, async () => {
      const run = await send([provider, '--url', url(provider), ...credentials[provider]()]);
      assert.equal(run.code, 0, run.stdout + run.stderr);
      const lines = run.stdout.trim().split('\n');
      assert.equal(lines.length, samples[provider]?.length, run.stdout);
      for (const line of lines) assert.match(line, new RegExp(`^${provider} .*: 20[04]( |$)`));
    });
  }

  it('lists every sample with --list', async () => {
    const run = await send(['--list']);
    assert.equal(run.code, 0);
    for (const [provider, list] of Object.entries(samples)) {
      for (const sample of list ?? []) assert.ok(run.stdout.includes(`${provider.padEnd(18)} ${sample.name}`));
    }
  });

  it('exits non-zero when a request is refused, and says why', async () => {
    const run = await send(['github', '--url', url('github'), '--secret', 'not-the-secret']);
    assert.equal(run.code, 1);
    assert.match(run.stdout, /^github push: 401 .*bad_signature/m);
    assert.match(run.stderr, /1 of 1 requests were refused/);
  });

  it('names the URL and the cause when nothing answers', async () => {
    const port = await freePort();
    const run = await send(['proign', '--url', `http://127.0.0.1:${port}/hooks/default/proign`]);
    assert.equal(run.code, 1);
    assert.match(
      run.stderr,
      new RegExp(`cannot reach http://127\\.0\\.0\\.1:${port}/hooks/default/proign: ECONNREFUSED`),
    );
  });
});
