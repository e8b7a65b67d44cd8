// Waiting in tests for what the servers do eventually: a check polled until it gives a value.
import { setTimeout as sleep } from 'node:timers/promises';

/** Polls `check` every 100 ms until it returns a truthy value; fails with the last error after `seconds`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, seconds = 60): Promise<T> {
  const deadline = Date.now() + seconds * 1000;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`${what}: not reached in ${seconds}s${last ? ` (${String(last)})` : ''}`);
}
