/**
 * Stop signals for the commands that run until told to stop (mirror, follow, project --follow).
 * Each claims them before its first await, so a SIGTERM that arrives while it is still starting
 * (connecting, loading a snapshot) is held and ends it cleanly once it is up, instead of killing
 * it with the signal half-way through. One-shot commands do not claim them: the default (exit at
 * once) is right for a query, and every write they make is transactional.
 */
export const stopSignal = (): Promise<NodeJS.Signals> =>
  new Promise((resolve) => {
    const on = (signal: NodeJS.Signals): void => {
      process.off('SIGTERM', on)
      process.off('SIGINT', on)
      resolve(signal)
    }
    process.on('SIGTERM', on)
    process.on('SIGINT', on)
  })
