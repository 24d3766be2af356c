/**
 * Stop signals for the commands that run until told to stop (mirror, follow, project --follow).
 * Each claims them before its first await, so a SIGTERM that arrives while it is still starting
 * (connecting, loading a snapshot) is held and ends it cleanly once it is up, instead of killing
 * it with the signal half-way through. One-shot commands do not claim them: the default (exit at
 * once) is right for a query, and every write they make is transactional.
 */
export interface StopSignal {
  /** Resolves with the first SIGTERM or SIGINT after the claim. */
  readonly received: Promise<NodeJS.Signals>
  /** Gives the signals back (idempotent): call it however the command ends. */
  readonly release: () => void
}

export const stopSignal = (): StopSignal => {
  let release = (): void => {}
  const received = new Promise<NodeJS.Signals>((resolve) => {
    const on = (signal: NodeJS.Signals): void => {
      release()
      resolve(signal)
    }
    release = () => {
      process.off('SIGTERM', on)
      process.off('SIGINT', on)
    }
    process.on('SIGTERM', on)
    process.on('SIGINT', on)
  })
  return { received, release: () => release() }
}
