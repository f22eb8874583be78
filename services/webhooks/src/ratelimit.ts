// Token buckets keyed by client address or key name, bounded in entries.
export class RateLimiter {
  readonly rate: number;
  readonly burst: number;
  readonly maxKeys: number;
  private buckets = new Map<string, { tokens: number; at: number }>();

  constructor(rate: number, burst: number, maxKeys = 10_000) {
    this.rate = rate;
    this.burst = burst;
    this.maxKeys = maxKeys;
  }

  private bucket(key: string, now: number): { tokens: number; at: number } {
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= this.maxKeys) {
        const oldest = this.buckets.keys().next().value;
        if (oldest !== undefined) this.buckets.delete(oldest);
      }
      b = { tokens: this.burst, at: now };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.rate);
      b.at = now;
    }
    return b;
  }

  /** Takes one token; returns 0 when allowed, else the seconds to wait (for Retry-After). */
  take(key: string, now = Date.now()): number {
    const b = this.bucket(key, now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.rate));
  }

  /** Seconds to wait before a token is there, without taking one. */
  peek(key: string, now = Date.now()): number {
    const b = this.bucket(key, now);
    return b.tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - b.tokens) / this.rate));
  }
}
