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
    // A signal held while the program was loading is this command's now.
    const held = endHold()
    if (held !== undefined) on(held)
  })
  return { received, release: () => release() }
}

/*
 * The hold covers the program's own loading (~0.3 s of module evaluation before any command
 * runs): bin.ts starts it first thing, then loads the rest. A command that claims the signals
 * (stopSignal, or run's own handlers) takes over a signal held meanwhile; for any other command
 * main releases the hold before running it, re-raising a held signal, so the default (exit at
 * once) applies as before.
 */
let holding = false
let held: NodeJS.Signals | undefined
const hold = (signal: NodeJS.Signals): void => {
  held ??= signal
}

/** Holds SIGTERM and SIGINT until a command claims them or main releases them. */
export const holdStopSignals = (): void => {
  if (holding) return
  holding = true
  process.on('SIGTERM', hold)
  process.on('SIGINT', hold)
}

/** Ends the hold (call it after installing one's own handlers); returns the signal held, if any. */
export const endHold = (): NodeJS.Signals | undefined => {
  if (!holding) return undefined
  holding = false
  process.off('SIGTERM', hold)
  process.off('SIGINT', hold)
  const signal = held
  held = undefined
  return signal
}

/** For a command that does not claim the stop signals: the default back, and a held one acted on. */
export const releaseHeldSignals = (): void => {
  const signal = endHold()
  if (signal !== undefined) process.kill(process.pid, signal)
}
