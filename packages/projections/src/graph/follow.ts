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
 * The position lives in memory, so the follower also checks, before each read, that the log
 * still holds what it applied: the event at its position must still be the message it was
 * (the store's `tip`). A database restored from a backup, or failed over to a replica that had
 * not received the newest events, hands their ids out again to other events; reading on from
 * the old position would skip those for ever and keep events the log no longer has. Then the
 * graph is rebuilt from the log as it is (`generation` counts the rebuilds).
 *
 * Emissions share one mutable graph: read it (or serialize it) before the next emission. The
 * Observable is shared: every subscriber sees the same follower (and the latest state at once),
 * which stops when the last one unsubscribes.
 */
import { type AppendSignal, backoffDelay, type BackoffPolicy, type EventLogReader, type Failure, type Logger, type LogTip, requirePositiveInts, silentLogger, STORE_CLOSED, waker } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import { EmptyError, filter, firstValueFrom, Observable, shareReplay, tap, timeout, TimeoutError } from 'rxjs'
import type { EntityGraph } from './model.js'
import { type GraphSources, graphAt, type ReplayProgress, replayInto } from './replay.js'

export interface FollowState {
  readonly graph: EntityGraph
  /** Every event up to this id is applied. */
  readonly position: number
  /**
   * The message_id of the log's event at `position` when it was read (undefined when unknown:
   * position 0, a reader without `tip`, a read that failed part way). A snapshot saved with it
   * (`eventMessageId`) is refused if the log no longer holds that event.
   */
  readonly messageId?: string
  /** How many times the graph was rebuilt from the log since the subscription (0 at first). */
  readonly generation: number
}

/** The head, and what the log holds at `position` now (undefined: the reader cannot tell). */
const readTip = async (reader: EventLogReader, position: number): Promise<E.Either<Failure, { head: number; headMessageId?: string; atPosition?: string | null }>> => {
  if (reader.tip === undefined) return E.map((head: number) => ({ head }))(await reader.headId()())
  return E.map((t: LogTip) => ({ head: t.head, ...(t.headMessageId === null ? {} : { headMessageId: t.headMessageId }), atPosition: t.messageIdAtPosition }))(await reader.tip(position)())
}

export interface FollowOptions {
  readonly pageSize?: number
  readonly pollMs?: number
  readonly retry?: BackoffPolicy
  readonly logger?: Logger
  /** Progress of the initial build (for a progress bar). */
  readonly onInitialProgress?: (p: ReplayProgress) => void
  /** After each read of the log: its failure, or undefined (for readiness: failures are retried here). */
  readonly onRead?: (failure: Failure | undefined) => void
  /**
   * A rebuild starts: the log lost events the follower applied ('rewound': a restore or a
   * failover) or retention deleted events it had not applied yet ('pruned'). Until the next
   * emission (a new `generation`) the follower is not following, and after 'rewound' the last
   * graph emitted is not even a state of the log (readiness).
   */
  readonly onRebuild?: (reason: 'rewound' | 'pruned') => void
  /**
   * While the follower catches up, after each graph change it applies, synchronously: the
   * shared graph is now the state as of `position`. An emission comes only once the whole range
   * is read and checked against retention (a prune during the read leaves a graph that skipped
   * events: it is rebuilt, never emitted), so a subscriber that reads the graph between two
   * emissions (serves it while a long tail is applied) learns here which state it reads (and,
   * in that rare case, reads a graph that skipped pruned events until the read ends). Also
   * called at the end of each streamed statement, so it moves where the log holds no graph change.
   */
  readonly onApplied?: (position: number) => void
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

    /**
     * Whether the log still holds what the follower applied up to `position`: 'rewound' when
     * the head is below it, or the event there is another message, or gone without retention
     * deleting it; 'pruned' when retention deleted events after it; 'same' otherwise (also when
     * retention deleted exactly the event at the position: nothing after it is missed).
     */
    const checkPosition = async (current: FollowState, head: number, atPosition: string | null | undefined): Promise<'same' | 'rewound' | 'pruned'> => {
      if (head < current.position) return 'rewound'
      if (atPosition === undefined || current.position === 0) return 'same'
      if (atPosition !== null) return current.messageId === undefined || atPosition === current.messageId ? 'same' : 'rewound'
      if (sources.reader.prunedBelow === undefined) return 'rewound'
      const below = await sources.reader.prunedBelow()()
      // Unreadable: the next wake asks again (a failed read is no evidence either way).
      if (E.isLeft(below)) return 'same'
      return below.right > current.position + 1 ? 'pruned' : below.right === current.position + 1 ? 'same' : 'rewound'
    }

    const run = async (): Promise<void> => {
      let failures = 0
      let state: FollowState | undefined
      let generation = 0
      while (!closed) {
        signalled = false
        let step: E.Either<Failure, FollowState>
        if (state === undefined) {
          // The head and its message read together, then the graph built to that id: the
          // message is what the next read checks the log against.
          const tip = await readTip(sources.reader, 0)
          const built = E.isLeft(tip)
            ? tip
            : await graphAt(sources, { eventId: tip.right.head }, {
                signal: stop.signal,
                ...(options.pageSize ? { pageSize: options.pageSize } : {}),
                ...(options.onInitialProgress ? { onProgress: options.onInitialProgress } : {}),
              })
          if (E.isRight(built)) for (const u of built.right.unreadable) log.warn({ snapshot: u.id, eventId: u.eventId, reason: u.reason }, 'snapshot passed over: it cannot be read')
          step = E.isLeft(built) ? built : E.isLeft(tip) ? tip : E.right(followState(built.right.graph, built.right.position, tip.right.headMessageId, generation))
        } else {
          const current: FollowState = state
          const tip = await readTip(sources.reader, current.position)
          if (E.isLeft(tip)) step = tip
          else {
            const { head, headMessageId, atPosition } = tip.right
            const verdict = await checkPosition(current, head, atPosition)
            if (verdict !== 'same') {
              if (verdict === 'pruned') {
                log.warn({ position: current.position }, 'events the follower had not applied were pruned; rebuilding from the newest snapshot')
              } else {
                log.error(
                  { position: current.position, head, applied: current.messageId ?? null, found: atPosition ?? null },
                  'the log no longer holds the events this follower applied (the database was restored from a backup, or failed over to a replica without them); rebuilding the graph from the log as it is',
                )
              }
              generation++
              options.onRebuild?.(verdict)
              state = undefined
              continue
            }
            if (head === current.position) step = E.right(current)
            else {
              const replayed = await replayInto(sources.reader, current.graph, {
                fromId: current.position,
                toId: head,
                signal: stop.signal,
                ...(options.onApplied ? { onApplied: options.onApplied } : {}),
                ...(options.pageSize ? { pageSize: options.pageSize } : {}),
              })
              // Prune does not wait for a follower (it has no checkpoint). Checked after the read
              // (the watermark only rises, so this also covers a prune before it): if events the
              // follower had not applied are gone, the graph can only be rebuilt from the newest
              // snapshot.
              if (await prunedPast(current.position)) {
                log.warn({ position: current.position }, 'events the follower had not applied were pruned; rebuilding from the newest snapshot')
                generation++
                options.onRebuild?.('pruned')
                state = undefined
                continue
              }
              // A failed replay may have applied some pages: keep following from where it got,
              // with the message it applied there (or, having applied nothing, the one before).
              step = E.isRight(replayed) ? E.right(followState(current.graph, head, headMessageId, generation)) : replayed
              if (E.isLeft(replayed)) {
                const { position, messageId } = replayed.left
                state = followState(current.graph, position, messageId ?? (position === current.position ? current.messageId : undefined), generation)
              }
            }
          }
        }
        if (closed) return
        // The store was closed under the follower (its owner shut down): nothing more to follow.
        if (E.isLeft(step) && step.left.code === STORE_CLOSED) {
          log.info({ position: state?.position ?? null }, 'graph follower stopped: its store was closed')
          subscriber.complete()
          return
        }
        options.onRead?.(E.isLeft(step) ? step.left : undefined)
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
        } else state = step.right
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

const followState = (graph: EntityGraph, position: number, messageId: string | undefined, generation: number): FollowState => ({
  graph,
  position,
  ...(messageId === undefined ? {} : { messageId }),
  generation,
})

/**
 * Resolves when the follower has applied every event up to `id`. Rejects after `timeoutMs`
 * (rxjs TimeoutError, saying where the follower was) when given, and when the follower ends first
 * (rxjs EmptyError: its store was closed). Why it is not moving (a database down, an id past the
 * head) is what the follower's `onRead` hears. The follower is shared with reference counting:
 * when this is its only subscriber, resolving unsubscribes it, and the next subscriber builds the
 * graph again; keep one subscription open for as long as the graph is wanted (as `follow` does).
 */
export const caughtUp = async (follow$: Observable<FollowState>, id: number, options: { readonly timeoutMs?: number } = {}): Promise<FollowState> => {
  let last: number | undefined
  const reached = follow$.pipe(
    tap((s) => void (last = s.position)),
    filter((s) => s.position >= id),
  )
  try {
    return await firstValueFrom(options.timeoutMs === undefined ? reached : reached.pipe(timeout({ first: options.timeoutMs })))
  } catch (e) {
    // rxjs says only "Timeout has occurred" or "no elements in sequence"; the class is kept.
    if (e instanceof TimeoutError) e.message = `event ${id} not applied within ${options.timeoutMs} ms: the follower is ${last === undefined ? 'still building its graph' : `at event ${last}`}`
    else if (e instanceof EmptyError) e.message = `the follower ended (its store was closed) before event ${id}${last === undefined ? '' : `; it was at event ${last}`}`
    throw e
  }
}
