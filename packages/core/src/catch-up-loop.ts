/**
 * The loop every checkpointed reader of the log runs (history projection, mirror):
 *
 *   catching-up --caught up--> idle --append signal or poll timer--> catching-up ...
 *   catching-up --failure--> backoff (capped, jittered) --timer--> catching-up
 *   any --close()--> closed (after the step in progress, whose transaction commits or not)
 *   catching-up --its store closed (STORE_CLOSED)--> closed
 *
 * An append signal that arrives while catching up is remembered, so no wake-up is lost.
 */
import type * as E from 'fp-ts/lib/Either.js'
import { type BackoffPolicy, backoffDelay } from './backoff.js'
import { type Failure, STORE_CLOSED } from './failure.js'
import type { Logger } from './logger.js'
import type { AppendSignal } from './ports.js'

export interface CatchUpLoopOptions {
  /** Processes everything up to the log's head. */
  readonly step: () => Promise<E.Either<Failure, unknown>>
  readonly signal?: AppendSignal
  /** Poll this often even without signals (a missed notification costs at most this). */
  readonly idlePollMs: number
  readonly retry: BackoffPolicy
  readonly logger: Logger
  /** Logged with each failure: "<what> failed; retrying". */
  readonly what: string
}

export interface CatchUpLoop {
  readonly start: () => void
  /** Idempotent. */
  readonly close: () => Promise<void>
}

/** A sleep that `wake()` cuts short (the latest sleep only). */
export const waker = (): { readonly sleep: (ms: number) => Promise<void>; readonly wake: () => void } => {
  let wakeUp: (() => void) | undefined
  return {
    sleep: (ms) =>
      new Promise((resolve) => {
        const timer = setTimeout(resolve, ms)
        wakeUp = () => {
          clearTimeout(timer)
          resolve()
        }
      }),
    wake: () => wakeUp?.(),
  }
}

export const catchUpLoop = (o: CatchUpLoopOptions): CatchUpLoop => {
  let closed = false
  let pending = false
  let loop: Promise<void> | undefined
  let subscription: { close: () => Promise<void> } | undefined
  let closing: Promise<void> | undefined
  const { sleep, wake } = waker()
  return {
    start: () => {
      if (loop !== undefined || closed) return
      subscription = o.signal?.onAppend(() => {
        pending = true
        wake()
      })
      loop = (async () => {
        let failures = 0
        while (!closed) {
          pending = false
          const r = await o.step()
          if (r._tag === 'Left' && r.left.code === STORE_CLOSED) {
            o.logger.info(`${o.what} stopped: its store was closed`)
            break
          }
          if (r._tag === 'Left') {
            const delay = backoffDelay(o.retry, failures++)
            o.logger[failures > 5 ? 'error' : 'warn']({ failure: r.left, retryInMs: delay }, `${o.what} failed; retrying`)
            await sleep(delay)
            continue
          }
          if (failures > 0) o.logger.info(`${o.what} resumed`)
          failures = 0
          if (!pending && !closed) await sleep(o.idlePollMs)
        }
      })()
    },
    close: () => {
      closing ??= (async () => {
        closed = true
        wake()
        await subscription?.close()
        await loop
      })()
      return closing
    },
  }
}
