/**
 * `batchBySizeOrTime(size, maxWaitMs)`: emits an array when it holds `size` items, or
 * `maxWaitMs` after its first item arrived, whichever comes first; flushes what it holds when
 * the source completes; never emits an empty array.
 *
 * Unlike RxJS's `bufferTime`, the clock starts at a batch's first item (not at a fixed
 * interval), so a lone message waits at most `maxWaitMs`, and an idle stream costs no timers.
 */
import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscription } from 'rxjs'

export const batchBySizeOrTime =
  <T>(size: number, maxWaitMs: number, scheduler: SchedulerLike = asyncScheduler): OperatorFunction<T, T[]> =>
  (source) =>
    new Observable<T[]>((subscriber) => {
      let buffer: T[] = []
      let timer: Subscription | undefined
      const flush = (): void => {
        timer?.unsubscribe()
        timer = undefined
        if (buffer.length === 0) return
        const batch = buffer
        buffer = []
        subscriber.next(batch)
      }
      const upstream = source.subscribe({
        next: (value) => {
          buffer.push(value)
          if (buffer.length >= size) flush()
          else timer ??= scheduler.schedule(flush, maxWaitMs)
        },
        // On error the held items are dropped, not emitted: their messages are unacked and the
        // broker redelivers them.
        error: (e: unknown) => subscriber.error(e),
        complete: () => {
          flush()
          subscriber.complete()
        },
      })
      return () => {
        timer?.unsubscribe()
        upstream.unsubscribe()
      }
    })
