/**
 * Waiting for a condition instead of sleeping: polls `probe` until it returns a value other
 * than undefined/false, failing with `what` after `timeoutMs`. A probe that throws an error with
 * `fatal: true` ends the wait with that error.
 */
export const eventually = async <T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 30_000, intervalMs = 25 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> => {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await probe()
      if (value !== undefined && value !== false) return value
    } catch (e) {
      // A probe can end the wait at once (the process it watches has died, say).
      if ((e as { fatal?: unknown })?.fatal === true) throw e
      last = e
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`)
    }
    await new Promise((r) => setTimeout(r, intervalMs))
  }
}
