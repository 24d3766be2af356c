/**
 * Capped exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff
 * and Jitter"): attempt n waits a uniform random time in [0, min(max, initial * 2^n)], so a
 * fleet of persistors reconnecting after an outage does not arrive in lockstep.
 */
export interface BackoffPolicy {
  readonly initialMs: number
  readonly maxMs: number
}

export const backoffDelay = (policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number => {
  const ceiling = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(attempt, 30))
  // Never below a tenth of the ceiling: a zero wait would hammer a server that just refused.
  return Math.round(ceiling * (0.1 + 0.9 * random()))
}
