const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds of a Go-style duration such as `30s`, `1h30m` or `1.5s` (the API's duration format). */
export function durationMs(text: string): number {
  const parts = [...text.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text) {
    throw new Error(`"${text}" is not a duration such as 30s, 5m or 1h30m`);
  }
  return Math.round(parts.reduce((sum, [, n, unit]) => sum + Number(n) * (unitMs[unit as string] ?? 0), 0));
}

/** Nanoseconds, as JetStream configurations want them. */
export const durationNanos = (text: string) => durationMs(text) * 1_000_000;
