// Leader election at its edges, against the real kube-apiserver: a leader that cannot renew the Lease within its
// renew deadline exits, and a leader killed without releasing is replaced once its Lease expires. The first
// operator talks to the API server through a proxy (test/harness/api-proxy.ts) that can cut it off.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type ApiProxy, startApiProxy } from '../harness/api-proxy.ts';
import { createNamespace, installCRDs } from '../harness/kube.ts';
import { tempDir } from '../harness/servers.ts';
import { waitFor } from '../harness/wait.ts';
import { type RunningOperator, startOperator } from '../harness/workloads.ts';
import { within } from './delivery-support.ts';

describe('leader election', () => {
  const work = tempDir('hookyard-leader-');
  const operators: RunningOperator[] = [];
  let namespace = '';
  let proxy: ApiProxy;

  before(async () => {
    await installCRDs();
    namespace = await createNamespace('leader');
    proxy = await startApiProxy(work.path, []);
  });
  after(async () => {
    for (const o of operators) o.kill('SIGKILL');
    await Promise.all(operators.map((o) => o.exited));
    await proxy?.close();
    work.remove();
  });

  const candidate = async (name: string, lease: string, timing: string[], env: Record<string, string> = {}) => {
    const args = ['--namespaces', namespace, '--lease-namespace', namespace, '--lease-name', lease, ...timing];
    const started = await startOperator(name, args, env);
    operators.push(started);
    return started;
  };
  const leading = (o: RunningOperator) => o.metric('hookyard_operator_is_leader').then((v) => v === 1);

  it('exits when it cannot renew the Lease within its renew deadline', async () => {
    // The Lease (120 s) outlasts the wait: only the renew deadline (2 s) explains the exit.
    const timing = ['--lease-duration', '120s', '--renew-deadline', '2s', '--retry-period', '300ms'];
    const leader = await candidate('leader-cut-off', 'cut-off', timing, { KUBECONFIG: proxy.kubeconfig });
    await waitFor('it leads', () => leading(leader));
    proxy.interrupt();
    try {
      assert.equal(await within(leader.exited, 60, 'the leader exits'), 1, leader.output());
    } finally {
      proxy.resume();
    }
    assert.match(leader.output(), /lost the leadership: could not renew the lease in time/);
  });

  it('is replaced once its Lease expires when it dies without giving it up', async () => {
    const timing = ['--lease-duration', '3s', '--renew-deadline', '2s', '--retry-period', '300ms'];
    const first = await candidate('leader-killed', 'expiry', timing);
    await waitFor('it leads', () => leading(first));
    const second = await candidate('leader-next', 'expiry', timing);
    assert.equal(await leading(second), false, 'two leaders at once');
    first.kill('SIGKILL');
    await first.exited;
    await waitFor('the standby takes over after the Lease expired', () => leading(second));
  });
});
