/**
 * Promises that resolve once a condition on their owner's state holds ("consuming", "caught up
 * to event N"). The owner calls `check()` after each change of that state and `abandon(reason)`
 * when it will change no more (closed); each wait may give up after its own timeout, with an
 * Error named TimeoutError. The texts are the waiter's, so each says where its owner stood.
 */
export interface Waiters {
  readonly wait: (ready: () => boolean, options: WaitOptions) => Promise<void>
  readonly check: () => void
  readonly abandon: (reason: string) => void
}

export interface WaitOptions {
  readonly timeoutMs?: number | undefined
  /** The TimeoutError's message. */
  readonly timedOut: () => string
  /** The message when the owner abandons the wait for `reason`. */
  readonly abandoned: (reason: string) => string
}

export const waiters = (): Waiters => {
  const pending = new Set<{ readonly ready: () => boolean; readonly settle: (error?: Error) => void; readonly options: WaitOptions }>()
  return {
    wait: (ready, options) => {
      if (ready()) return Promise.resolve()
      return new Promise((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined
        const waiter = {
          ready,
          options,
          settle: (error?: Error) => {
            clearTimeout(timer)
            pending.delete(waiter)
            if (error === undefined) resolve()
            else reject(error)
          },
        }
        pending.add(waiter)
        if (options.timeoutMs !== undefined) {
          timer = setTimeout(() => waiter.settle(Object.assign(new Error(options.timedOut()), { name: 'TimeoutError' })), options.timeoutMs)
        }
      })
    },
    check: () => {
      for (const w of pending) if (w.ready()) w.settle()
    },
    abandon: (reason) => {
      for (const w of pending) w.settle(new Error(w.options.abandoned(reason)))
    },
  }
}
