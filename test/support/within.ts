/**
 * `promise`'s value, or 'hung' if it has not settled after `ms`. The timer is cleared either way:
 * a bare setTimeout in a race kept the test file running for the whole `ms` after it passed.
 */
export const settledWithin = async <T>(promise: Promise<T>, ms: number): Promise<T | 'hung'> => {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), ms)))])
  } finally {
    clearTimeout(timer)
  }
}

/** How the process exited, or 'hung' if it is still running after `ms`. */
export const exitedWithin = (p: { readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> }, ms: number) => settledWithin(p.exited, ms)
