/**
 * Checks of numeric options at the library's entry points. A zero page size or window is a
 * programmer's error, not an outcome: it silently built an empty graph (pageSize 0), starved the
 * event loop (maxInFlight 0) or unbounded memory (prefetch 0 means "no limit" to AMQP), so it
 * throws a TypeError naming the option, as defects do. The CLI checks its flags before this.
 */
const check = (where: string, name: string, value: unknown, min: number): void => {
  if (value === undefined) return
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new TypeError(`${where}: ${name} must be an integer >= ${min}, got ${typeof value === 'number' ? value : JSON.stringify(value)}`)
  }
}

/** Each named option, when given, must be an integer >= 1. */
export const requirePositiveInts = (where: string, options: Readonly<Record<string, unknown>>): void => {
  for (const [name, value] of Object.entries(options)) check(where, name, value, 1)
}

/** Each named option, when given, must be an integer >= 0 (event ids, positions, durations that may be 0). */
export const requireNonNegativeInts = (where: string, options: Readonly<Record<string, unknown>>): void => {
  for (const [name, value] of Object.entries(options)) check(where, name, value, 0)
}
