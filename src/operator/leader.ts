// Leader election with a coordination.k8s.io/v1 Lease, the way client-go does it: the holder renews the Lease
// every retry period; another replica takes it over only once it has not been renewed for a whole lease duration.
// Every write carries the Lease's resourceVersion, so two candidates can never both win the same round.
import * as k8s from '@kubernetes/client-node';
import type { Logger } from '../runtime/log.ts';

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  /** A leader that could not renew for this long stops leading (before another may take over). */
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
}

export interface Leadership {
  /** Resolves when this replica becomes the leader. */
  acquired: Promise<void>;
  /** Resolves when this replica stops being the leader after having been it (lost or released). */
  lost: Promise<void>;
  isLeader(): boolean;
  /** Stops competing; a leader gives the Lease up at once so another replica need not wait it out. */
  release(): Promise<void>;
}

export function electLeader(kc: k8s.KubeConfig, options: LeaderOptions, log: Logger): Leadership {
  const api = kc.makeApiClient(k8s.CoordinationV1Api);
  const leaseDurationMs = options.leaseDurationMs ?? 15_000;
  const renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
  const retryPeriodMs = options.retryPeriodMs ?? 2_000;
  const { namespace, name, identity } = options;
  let leader = false;
  let stopped = false;
  let lastRenew = 0;
  let onAcquired: () => void = () => {};
  let onLost: () => void = () => {};
  const acquired = new Promise<void>((ok) => {
    onAcquired = ok;
  });
  const lost = new Promise<void>((ok) => {
    onLost = ok;
  });
  let timer: NodeJS.Timeout | undefined;
  let observed = { record: '', at: 0 };
  /** Whether the last Lease read named another holder. */
  let heldByOther = false;

  const spec = (lease: k8s.V1Lease | undefined, now: Date): k8s.V1LeaseSpec => {
    const held = lease?.spec?.holderIdentity === identity;
    return {
      holderIdentity: identity,
      leaseDurationSeconds: Math.ceil(leaseDurationMs / 1000),
      acquireTime: held ? lease?.spec?.acquireTime : new k8s.V1MicroTime(now.getTime()),
      renewTime: new k8s.V1MicroTime(now.getTime()),
      leaseTransitions: (lease?.spec?.leaseTransitions ?? 0) + (held || !lease ? 0 : 1),
    };
  };

  /** One round: create, renew or take over the Lease. True when this replica holds it afterwards. */
  const tryAcquire = async (): Promise<boolean> => {
    const now = new Date();
    let lease: k8s.V1Lease | undefined;
    try {
      lease = await api.readNamespacedLease({ namespace, name });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
    if (!lease) {
      await api.createNamespacedLease({ namespace, body: { metadata: { name, namespace }, spec: spec(lease, now) } });
      return true;
    }
    const holder = lease.spec?.holderIdentity;
    // Expiry is judged by this replica's own clock from when it last saw the Lease change, as client-go does, so
    // clock skew between replicas cannot make a live leader look expired.
    const record = `${holder}/${String(lease.spec?.renewTime)}`;
    if (record !== observed.record) observed = { record, at: now.getTime() };
    const duration = (lease.spec?.leaseDurationSeconds ?? 0) * 1000;
    heldByOther = Boolean(holder && holder !== identity);
    if (heldByOther && observed.at + duration > now.getTime()) return false;
    await api.replaceNamespacedLease({ namespace, name, body: { ...lease, spec: spec(lease, now) } });
    return true;
  };

  const round = async () => {
    if (stopped) return;
    // The renew deadline counts from when the request went out: a slow answer must not extend it.
    const started = Date.now();
    let holds = false;
    try {
      holds = await tryAcquire();
    } catch (err) {
      // A conflict means another replica wrote first; anything else is an API problem. Either way: not renewed.
      if ((err as { code?: number }).code !== 409)
        log.warn({ err: String(err) }, 'leader election: lease update failed');
    }
    if (stopped) return;
    if (!holds && leader && heldByOther) {
      lose('another replica holds the lease');
      return;
    }
    if (holds) {
      lastRenew = started;
      if (!leader) {
        leader = true;
        log.info({ lease: `${namespace}/${name}`, identity }, 'became the leader');
        onAcquired();
      }
    }
    timer = setTimeout(round, retryPeriodMs);
  };
  void round();
  // Checked apart from the rounds, so a renewal request that hangs cannot keep a stale leader acting.
  const watchdog: NodeJS.Timeout = setInterval(
    () => {
      if (leader && Date.now() - lastRenew > renewDeadlineMs) lose('could not renew the lease in time');
    },
    Math.min(retryPeriodMs, 1000),
  );

  function lose(why: string) {
    leader = false;
    stopped = true;
    clearTimeout(timer);
    clearInterval(watchdog);
    log.error({ lease: `${namespace}/${name}` }, `lost the leadership: ${why}`);
    onLost();
  }

  return {
    acquired,
    lost,
    isLeader: () => leader,
    async release() {
      stopped = true;
      clearTimeout(timer);
      clearInterval(watchdog);
      if (!leader) return;
      leader = false;
      // A renewal already under way may write between this read and this write: read again and retry, or the
      // standby would wait out the whole lease duration (seen: a 409 at SIGTERM).
      for (let attempt = 1; attempt <= 5; attempt++) {
        try {
          const lease = await api.readNamespacedLease({ namespace, name });
          if (lease.spec?.holderIdentity !== identity) break;
          // As client-go does on release: no holder, and a lease that expires at once.
          await api.replaceNamespacedLease({
            namespace,
            name,
            body: { ...lease, spec: { ...lease.spec, holderIdentity: undefined, leaseDurationSeconds: 1 } },
          });
          break;
        } catch (err) {
          if ((err as { code?: number }).code === 409 && attempt < 5) continue;
          log.warn({ err: String(err) }, 'leader election: could not release the lease');
          break;
        }
      }
      onLost();
    },
  };
}
