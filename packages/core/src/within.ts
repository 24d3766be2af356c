/**
 * `promise`'s value, or `fallback` once `ms` have passed (the promise goes on unobserved). The
 * timer does not keep the process alive: a wait still pending at exit must not delay it.
 */
export const within = <T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> => {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<T>((resolve) => {
      timer = setTimeout(() => resolve(fallback), Math.max(0, ms))
      timer.unref()
    }),
  ]).finally(() => clearTimeout(timer))
}
