// Status conditions per Kubernetes conventions: one condition per type, each with a CamelCase reason and a message
// a user can act on; lastTransitionTime moves only when the status does, and Ready summarizes the others.
import { isDeepStrictEqual } from 'node:util';
import type { Condition } from '../api/common.ts';
import { ConditionType, Reason } from '../api/conditions.ts';

export interface Check {
  type: string;
  status: boolean | 'Unknown';
  reason: string;
  message: string;
}

const statusOf = (s: Check['status']): Condition['status'] => (s === 'Unknown' ? 'Unknown' : s ? 'True' : 'False');

/**
 * The conditions for these checks with Ready first: True when every check that counts toward readiness is, else
 * False with the first failing check's reason and message. Times of unchanged conditions are kept.
 */
export function conditionsFor(
  checks: Check[],
  readyFrom: string[],
  previous: Condition[] | undefined,
  generation: number | undefined,
  now = new Date(),
): Condition[] {
  const failing = checks.find((c) => readyFrom.includes(c.type) && c.status !== true);
  const ready: Check = failing
    ? { type: ConditionType.Ready, status: false, reason: failing.reason, message: failing.message }
    : { type: ConditionType.Ready, status: true, reason: Reason.Ready, message: 'All checks passed.' };
  return [ready, ...checks].map((check) => {
    const status = statusOf(check.status);
    const before = previous?.find((c) => c.type === check.type);
    return {
      type: check.type,
      status,
      reason: check.reason,
      message: check.message,
      lastTransitionTime:
        before?.status === status ? before.lastTransitionTime : now.toISOString().replace(/\.\d+Z$/, 'Z'),
      observedGeneration: generation,
    };
  });
}

/** Whether writing `next` would change the status; a write that changes nothing would still move resourceVersion. */
export function statusChanged(current: object | undefined, next: object): boolean {
  return !isDeepStrictEqual(JSON.parse(JSON.stringify(current ?? {})), JSON.parse(JSON.stringify(next)));
}

/** The Ready condition's reason, to tell transitions worth an Event. */
export const readyReason = (conditions: Condition[] | undefined) =>
  conditions?.find((c) => c.type === ConditionType.Ready)?.reason;
