// Retry schedule of a delivery, as Standard Webhooks / Svix: the delay before
// attempt n+1 after attempt n failed. 8 attempts over more than 24 h.
export const SCHEDULE_SECONDS: readonly number[] = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
export const MAX_ATTEMPTS = SCHEDULE_SECONDS.length + 1;

/** Milliseconds to wait after `attempts` failed attempts, or null when it was the last.
 *  Jitter: up to +/-10 % (`random` in [0, 1)). `scale` shrinks it for tests. */
export function retryDelayMs(attempts: number, scale = 1, random: () => number = Math.random): number | null {
  if (attempts < 1 || attempts >= MAX_ATTEMPTS) return null;
  const base = SCHEDULE_SECONDS[attempts - 1] * 1000 * scale;
  const jitter = 1 + (random() * 2 - 1) * 0.1;
  return Math.max(0, Math.round(base * jitter));
}

/** Backoff of the bus intake when something it depends on is down. */
export function intakeDelayMs(failures: number): number {
  return Math.min(60_000, 1000 * 2 ** Math.max(0, failures - 1));
}
