// Helpers for tests that talk to the harness's kube-apiserver: a client, kubectl, namespaces, the CRDs and the
// admission webhook served from this process.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import express from 'express';
import { admissionRouter } from '../../src/admission/webhook.ts';
import { binDir, root, servingCertificate } from './servers.ts';

export function requireEnv(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run tests through test/harness/run.ts (make test)`);
  return value;
}

export function kubeConfig(): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(requireEnv('KUBECONFIG'));
  return kc;
}

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

export function kubectl(args: string[], input?: string): Promise<Result> {
  return new Promise((ok) => {
    const child = execFile(
      join(binDir, 'kubectl'),
      ['--kubeconfig', requireEnv('KUBECONFIG'), ...args],
      { maxBuffer: 16 << 20 },
      (err, stdout, stderr) => ok({ code: err ? ((err.code as number) ?? 1) : 0, stdout, stderr }),
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

export async function createNamespace(prefix: string): Promise<string> {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  await kubeConfig()
    .makeApiClient(k8s.CoreV1Api)
    .createNamespace({ body: { metadata: { name } } });
  return name;
}

/** Applies the generated CRDs and waits until the API server serves both. */
export async function installCRDs(): Promise<void> {
  const applied = await kubectl(['apply', '--server-side', '--field-manager=hookyard-test', '-f', join(root, 'crds')]);
  if (applied.code !== 0) throw new Error(`applying crds/ failed: ${applied.stderr}`);
  const api = kubeConfig().makeApiClient(k8s.ApiextensionsV1Api);
  for (const name of ['providerendpoints.hookyard.io', 'webhooksubscriptions.hookyard.io']) {
    for (let i = 0; ; i++) {
      const crd = await api.readCustomResourceDefinition({ name });
      if (crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) break;
      if (i > 100) throw new Error(`${name} did not become Established`);
      await sleep(100);
    }
  }
}

/**
 * Serves the admission webhook from this process over HTTPS on a free loopback port and registers it with the
 * API server, then waits until the API server calls it. Returns a function that removes both.
 */
export async function installAdmissionWebhook(): Promise<() => Promise<void>> {
  const cert = servingCertificate(
    join(requireEnv('HOOKYARD_TEST_WORKDIR'), `webhook-${randomBytes(3).toString('hex')}`),
  );
  const app = express().use(admissionRouter());
  const server: Server = createServer({ cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) }, app);
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as { port: number };
  const name = 'hookyard-test-validation';
  const api = kubeConfig().makeApiClient(k8s.AdmissionregistrationV1Api);
  await api.createValidatingWebhookConfiguration({
    body: {
      metadata: { name },
      webhooks: [
        {
          name: 'validate.hookyard.io',
          admissionReviewVersions: ['v1'],
          sideEffects: 'None',
          failurePolicy: 'Fail',
          timeoutSeconds: 5,
          clientConfig: {
            url: `https://127.0.0.1:${port}/validate`,
            caBundle: readFileSync(cert.caFile).toString('base64'),
          },
          rules: [
            {
              apiGroups: ['hookyard.io'],
              apiVersions: ['v1alpha1'],
              operations: ['CREATE', 'UPDATE'],
              resources: ['providerendpoints', 'webhooksubscriptions'],
            },
          ],
        },
      ],
    },
  });
  // The API server picks the configuration up asynchronously: wait until a dry run is refused by the webhook.
  const probe = `apiVersion: hookyard.io/v1alpha1
kind: WebhookSubscription
metadata: {name: webhook-probe, namespace: default}
spec: {sources: [{endpoint: x}], filter: "nope(", target: {url: "http://x"}}`;
  for (let i = 0; ; i++) {
    const r = await kubectl(['apply', '--server-side', '--dry-run=server', '-f', '-'], probe);
    if (r.code !== 0 && r.stderr.includes('validate.hookyard.io')) break;
    if (i > 100) throw new Error(`the admission webhook was never called: ${r.stderr}`);
    await sleep(100);
  }
  return async () => {
    await api.deleteValidatingWebhookConfiguration({ name });
    await new Promise((ok) => server.close(ok));
  };
}

/** A ServiceAccount `account` that may read and patch Hookyard's resources in `namespace` only, as YAML. */
export function namespaceUserRbac(namespace: string, account: string): string {
  return `apiVersion: v1
kind: ServiceAccount
metadata: {name: ${account}, namespace: ${namespace}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ${account}, namespace: ${namespace}}
rules:
  - apiGroups: [hookyard.io]
    resources: [providerendpoints, webhooksubscriptions]
    verbs: [get, list, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ${account}, namespace: ${namespace}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ${account}}
subjects: [{kind: ServiceAccount, name: ${account}, namespace: ${namespace}}]
`;
}
