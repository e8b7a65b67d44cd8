// Faults in pods under load, for the real-node tests: a paced stream of requests through the Ingress (startLoad),
// pods deleted or their process SIGKILLed from the host one at a time (hit), and what each fault cost in answers
// (costs): how many were answered 503 by a receiver or 502/504 by Traefik, over how many seconds.
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Agent, request } from 'undici';
import { kubectl } from '../harness/kube.ts';
import { eventually } from './support.ts';

export interface Pod {
  metadata: { name: string; uid: string; deletionTimestamp?: string };
  status?: { containerStatuses?: { ready: boolean }[] };
}

/** Pods of one Deployment or StatefulSet, and how many it has when nothing is wrong. */
export interface PodGroup {
  namespace: string;
  selector: string;
  count: number;
}

export async function pods(group: PodGroup): Promise<Pod[]> {
  const r = await kubectl(['-n', group.namespace, 'get', 'pods', '-l', group.selector, '-o', 'json']);
  if (r.code !== 0) throw new Error(r.stderr);
  return (JSON.parse(r.stdout) as { items: Pod[] }).items;
}

const serving = (p: Pod) => !p.metadata.deletionTimestamp && (p.status?.containerStatuses ?? []).every((c) => c.ready);

/** Throws, saying what is missing, unless the group has all its pods ready and none terminating. */
export async function groupReady(group: PodGroup): Promise<void> {
  const all = await pods(group);
  const ready = all.filter((p) => serving(p) && p.status?.containerStatuses?.length);
  if (all.length !== group.count || ready.length !== group.count) {
    throw new Error(`${group.selector}: ${ready.length} of ${all.length} pods ready, ${group.count} wanted`);
  }
}

/** The first serving pod of a group. */
export async function servingPod(group: PodGroup): Promise<string> {
  const pod = (await pods(group)).find(serving);
  if (!pod) throw new Error(`no serving pod for ${group.selector}`);
  return pod.metadata.name;
}

/**
 * Deletes the pod (its containers get SIGTERM and their grace period), or SIGKILLs from the host the processes in
 * it whose command line has `word` (found by the pod's cgroup; the pause process is spared); returns how many
 * it hit.
 */
export async function hit(namespace: string, name: string, how: 'delete' | 'SIGKILL', word: string) {
  if (how === 'delete') {
    const r = await kubectl(['-n', namespace, 'delete', 'pod', name, '--wait=false']);
    return r.code === 0 ? 1 : 0;
  }
  const r = await kubectl(['-n', namespace, 'get', 'pod', name, '-o', 'jsonpath={.metadata.uid}']);
  // The cgroupfs driver names a pod's cgroup pod<uid>.
  const cgroup = `pod${r.stdout}`;
  let killed = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const inPod = r.stdout !== '' && readFileSync(`/proc/${pid}/cgroup`, 'utf8').includes(cgroup);
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (inPod && args.some((a) => a === word || a.endsWith(`/${word}`))) {
        process.kill(Number(pid), 'SIGKILL');
        killed++;
      }
    } catch {
      // exited meanwhile
    }
  }
  return killed;
}

export interface Answer {
  id: string;
  sentAt: number;
  /** The HTTP status, 0 when no answer came (reset, or nothing within the timeout). */
  status: number;
}

export interface LoadOptions {
  url: string;
  agent: Agent;
  perSecond: number;
  /** The most requests it sends, whatever happens. */
  max: number;
  /** The first id's number (default 0). */
  from?: number;
  /** The request for the i-th id. */
  body: (id: string) => string;
  contentType: string;
}

/**
 * Sends request i at start + i/perSecond (an open loop: a slow answer does not slow the senders), each with its
 * own id, until stopped or `max` are sent. At most 256 wait for an answer at once; the pace falls behind then.
 */
export function startLoad(o: LoadOptions): { stop(): Promise<Answer[]>; finished(): Promise<Answer[]> } {
  const answers: Answer[] = [];
  const inFlight = new Set<Promise<void>>();
  let stopped = false;
  const send = (i: number) => {
    const id = `LOAD-${(o.from ?? 0) + i}`;
    const sentAt = Date.now();
    const headers = { 'content-type': o.contentType };
    const p = request(o.url, { method: 'POST', body: o.body(id), headers, dispatcher: o.agent, headersTimeout: 35_000 })
      .then(async (r) => {
        await r.body.text();
        return r.statusCode;
      })
      .catch(() => 0)
      .then((status) => {
        answers.push({ id, sentAt, status });
        inFlight.delete(p);
      });
    inFlight.add(p);
  };
  const loop = (async () => {
    const start = Date.now();
    for (let i = 0; i < o.max && !stopped; i++) {
      const wait = start + (i * 1000) / o.perSecond - Date.now();
      if (wait > 0) await sleep(wait);
      while (inFlight.size >= 256) await Promise.race(inFlight);
      send(i);
    }
  })();
  const answered = async () => {
    await loop;
    await Promise.all(inFlight);
    return answers.sort((a, b) => a.sentAt - b.sentAt);
  };
  return {
    /** Sends no more; every answer, once those sent have one. */
    stop() {
      stopped = true;
      return answered();
    },
    /** Every answer, once all `max` requests are sent and answered. */
    finished: answered,
  };
}

export interface Cost {
  fault: string;
  sent: number;
  acknowledged: number;
  /** Answers by status, other than 2xx. */
  failed: Record<number, number>;
  /** From the first to the last request answered 503 (by send time), plus one interval between sends; 0 if none. */
  seconds503: number;
  /** The same for Traefik's 502 and 504 and for requests with no answer. */
  secondsGateway: number;
}

/** Each answer charged to the last fault made before it was sent (or to `before`, the first mark). */
export function costs(answers: Answer[], marks: { fault: string; at: number }[], perSecond: number): Cost[] {
  const span = (xs: Answer[]) =>
    xs.length === 0 ? 0 : Math.round(((xs.at(-1)?.sentAt ?? 0) - (xs[0]?.sentAt ?? 0) + 1000 / perSecond) / 100) / 10;
  return marks.map((mark, i) => {
    const end = marks[i + 1]?.at ?? Number.POSITIVE_INFINITY;
    const mine = answers.filter((a) => a.sentAt >= mark.at && a.sentAt < end);
    const failed: Record<number, number> = {};
    for (const a of mine) if (a.status < 200 || a.status > 299) failed[a.status] = (failed[a.status] ?? 0) + 1;
    return {
      fault: mark.fault,
      sent: mine.length,
      acknowledged: mine.filter((a) => a.status >= 200 && a.status < 300).length,
      failed,
      seconds503: span(mine.filter((a) => a.status === 503)),
      secondsGateway: span(mine.filter((a) => [0, 502, 504].includes(a.status))),
    };
  });
}

/** Waits until every group is whole and ready, and `also` (when given) says so too (it throws when not). */
export async function allReady(groups: PodGroup[], also?: () => Promise<void>, seconds = 120): Promise<void> {
  await eventually(
    'every pod ready',
    async () => {
      for (const g of groups) await groupReady(g);
      await also?.();
      return true;
    },
    seconds,
  );
}
