// The chart's alerts, rendered with the default values: promtool accepts the rules, and its unit tests
// (test/prometheus/alerts.test.yaml) show each alert firing when it should and staying quiet when it should not.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { renderedRuleGroups } from '../harness/helm.ts';
import type { Result } from '../harness/kube.ts';
import { binDir, root, tempDir } from '../harness/servers.ts';

const unitTests = join(root, 'test/prometheus/alerts.test.yaml');

function promtool(args: string[]): Promise<Result> {
  return new Promise((ok) => {
    execFile(join(binDir, 'promtool'), args, (err, stdout, stderr) =>
      ok({ code: err ? ((err.code as number) ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('alerts', () => {
  const work = tempDir('hookyard-alerts-');
  after(() => work.remove());

  it('pass promtool check rules and every unit test, and every alert has one that fires and one that does not', async () => {
    const groups = await renderedRuleGroups();
    const rulesFile = join(work.path, 'hookyard.rules.yaml');
    writeFileSync(rulesFile, stringify({ groups }));
    copyFileSync(unitTests, join(work.path, 'alerts.test.yaml'));
    const checked = await promtool(['check', 'rules', rulesFile]);
    assert.equal(checked.code, 0, checked.stdout + checked.stderr);
    const tested = await promtool(['test', 'rules', join(work.path, 'alerts.test.yaml')]);
    assert.equal(tested.code, 0, tested.stdout + tested.stderr);

    const cases = (
      parse(readFileSync(unitTests, 'utf8')) as {
        tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
      }
    ).tests.flatMap((t) => t.alert_rule_test);
    const alerts = groups.flatMap((g) => g.rules.map((r) => r.alert));
    assert.equal(alerts.length, 7);
    for (const alert of alerts) {
      assert.ok(
        cases.some((c) => c.alertname === alert && c.exp_alerts.length > 0),
        `${alert} has no test where it fires`,
      );
      assert.ok(
        cases.some((c) => c.alertname === alert && c.exp_alerts.length === 0),
        `${alert} has no test where it stays quiet`,
      );
    }
  });

  it('are each listed in the README with what to do', async () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    for (const group of await renderedRuleGroups()) {
      for (const { alert } of group.rules)
        assert.ok(readme.includes(`| \`${alert}\` |`), `${alert} is not in the README`);
    }
  });

  it('can be turned off one by one, and a rule with none is not rendered', async () => {
    const names = [
      'deliveryFailureRatio',
      'deadLetters',
      'signatureFailures',
      'consumerLag',
      'receiverErrors',
      'reconcileErrors',
      'noLeader',
    ];
    const off = (name: string) => `monitoring.prometheusRule.alerts.${name}.enabled=false`;
    const one = await renderedRuleGroups([off('consumerLag')]);
    const alerts = one.flatMap((g) => g.rules.map((r) => r.alert));
    assert.equal(alerts.length, 6);
    assert.ok(!alerts.includes('HookyardConsumerLagHigh'));
    assert.deepEqual(await renderedRuleGroups(names.map(off)), []);
  });
});
