/**
 * Following the log: an Observable that keeps an entity graph current as events are appended.
 *
 * On subscribe: build the graph as of the head (newest snapshot + replay), emit, then on every
 * append signal (or every `pollMs`, in case a notification was missed) read the new graph
 * changes by id and emit again. Reads are keyset pages by id and the store makes ids visible in
 * increasing order (design §4), so the follower never skips an event; should `prune` delete
 * events it has not applied yet (it waits for checkpoints, and a follower has none), the graph
 * is rebuilt from the newest snapshot instead. Failures are retried with backoff; the
 * Observable errors only on a defect. Unsubscribing stops everything.
 *
 * Emissions share one mutable graph: read it (or serialize it) before the next emission. The
 * Observable is shared: every subscriber sees the same follower (and the latest state at once),
 * which stops when the last one unsubscribes.
 */
import { type AppendSignal, backoffDelay, type BackoffPolicy, type Failure, type Logger, requirePositiveInts, silentLogger, STORE_CLOSED, waker } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import { filter, firstValueFrom, Observable, shareReplay, timeout } from 'rxjs'
import type { EntityGraph } from './model.js'
import { type GraphSources, graphAt, type ReplayProgress, replayInto } from './replay.js'

export interface FollowState {
  readonly graph: EntityGraph
  /** Every event up to this id is applied. */
  readonly position: number
}

export interface FollowOptions {
  readonly pageSize?: number
  readonly pollMs?: number
  readonly retry?: BackoffPolicy
  readonly logger?: Logger
  /** Progress of the initial build (for a progress bar). */
  readonly onInitialProgress?: (p: ReplayProgress) => void
}

export const followGraph = (sources: GraphSources & { readonly signal?: AppendSignal }, options: FollowOptions = {}): Observable<FollowState> =>
  new Observable<FollowState>((subscriber) => {
    requirePositiveInts('followGraph', { pageSize: options.pageSize, pollMs: options.pollMs })
    const log = options.logger ?? silentLogger
    const retry = options.retry ?? { initialMs: 200, maxMs: 10_000 }
    let closed = false
    // Unsubscribing stops a replay in progress too (the initial build of a large graph, a long
    // tail), not only the loop after it.
    const stop = new AbortController()
    const { sleep, wake } = waker()
    let signalled = false
    const signal = sources.signal?.onAppend(() => {
      signalled = true
      wake()
    })

    // Whether retention deleted events after `position` (a failed read counts as no: the replay
    // that follows reports it).
    const prunedPast = async (position: number): Promise<boolean> => {
      if (sources.reader.prunedBelow === undefined) return false
      const below = await sources.reader.prunedBelow()()
      return E.isRight(below) && below.right > position + 1
    }

    const run = async (): Promise<void> => {
      let failures = 0
      let state: FollowState | undefined
      while (!closed) {
        signalled = false
        let step: E.Either<Failure, FollowState>
        if (state === undefined) {
          const built = await graphAt(sources, 'head', {
            signal: stop.signal,
            ...(options.pageSize ? { pageSize: options.pageSize } : {}),
            ...(options.onInitialProgress ? { onProgress: options.onInitialProgress } : {}),
          })
          if (E.isRight(built)) for (const u of built.right.unreadable) log.warn({ snapshot: u.id, eventId: u.eventId, reason: u.reason }, 'snapshot passed over: it cannot be read')
          step = E.map((g: { graph: EntityGraph; position: number }) => ({ graph: g.graph, position: g.position }))(built)
        } else {
          const current: FollowState = state
          const head = await sources.reader.headId()()
          if (E.isLeft(head)) step = head
          else if (head.right <= current.position) step = E.right(current)
          else {
            const moved = await replayInto(sources.reader, current.graph, { fromId: current.position, toId: head.right, signal: stop.signal, ...(options.pageSize ? { pageSize: options.pageSize } : {}) })
            // Prune does not wait for a follower (it has no checkpoint). Checked after the read (the
            // watermark only rises, so this also covers a prune before it): if events the follower
            // had not applied are gone, the graph can only be rebuilt from the newest snapshot.
            if (await prunedPast(current.position)) {
              log.warn({ position: current.position }, 'events the follower had not applied were pruned; rebuilding from the newest snapshot')
              state = undefined
              continue
            }
            // A failed replay may have applied some pages: keep following from where it got.
            step = E.isRight(moved) ? E.right({ graph: current.graph, position: moved.right }) : moved
            if (E.isLeft(moved)) state = { graph: current.graph, position: moved.left.position }
          }
        }
        if (closed) return
        // The store was closed under the follower (its owner shut down): nothing more to follow.
        if (E.isLeft(step) && step.left.code === STORE_CLOSED) {
          log.info({ position: state?.position ?? null }, 'graph follower stopped: its store was closed')
          subscriber.complete()
          return
        }
        if (E.isLeft(step)) {
          const delay = backoffDelay(retry, failures++)
          log[failures > 5 ? 'error' : 'warn']({ failure: step.left, retryInMs: delay }, 'graph follower cannot read the log; retrying')
          await sleep(delay)
          continue
        }
        failures = 0
        if (state === undefined || step.right.position !== state.position) {
          state = step.right
          subscriber.next(state)
        }
        if (!signalled) await sleep(options.pollMs ?? 5_000)
      }
    }
    run().catch((e: unknown) => subscriber.error(e))
    return () => {
      closed = true
      stop.abort()
      wake()
      void signal?.close()
    }
  }).pipe(shareReplay({ bufferSize: 1, refCount: true }))

/**
 * Resolves when the follower has applied every event up to `id`. Rejects after `timeoutMs`
 * (rxjs TimeoutError) when given, and when the follower ends first (its store closed). The
 * follower is shared with reference counting: when this is its only subscriber, resolving
 * unsubscribes it, and the next subscriber builds the graph again; keep one subscription open
 * for as long as the graph is wanted (as `follow` does).
 */
export const caughtUp = (follow$: Observable<FollowState>, id: number, options: { readonly timeoutMs?: number } = {}): Promise<FollowState> =>
  firstValueFrom(
    options.timeoutMs === undefined
      ? follow$.pipe(filter((s) => s.position >= id))
      : follow$.pipe(
          filter((s) => s.position >= id),
          timeout({ first: options.timeoutMs }),
        ),
  )
