/**
 * The history projection runner: reads the event log in id order from its checkpoint and
 * applies each range's history events together with the checkpoint (one transaction), so stopping
 * it at any moment, or running a range twice, changes nothing.
 *
 * Loop (states: idle -> catching-up -> idle ...; close() from any state -> closed):
 *   head := the log's highest id (ids become visible in order, so nothing at or below it can
 *           appear later);
 *   while checkpoint < head: apply the next range (checkpoint, to] and move the checkpoint to
 *           `to`, where
 *           - derive 'in-database' (the default): to = min(checkpoint + pageSize, head); the
 *             store derives the rows of the range's plain events itself (store-postgres
 *             history-range.ts) and hands the rest to historyCommand;
 *           - derive 'in-node' (the reference the tests hold the database to): the next page of
 *             up to pageSize history events is read, turned into commands by historyCommand and
 *             applied; the page after it is read meanwhile;
 *   then wait for an append signal (or the idle poll interval).
 * Two runners may run (one per persistor instance): the checkpoint is compare-and-set, so the one
 * that loses a range re-reads the checkpoint and goes on from there.
 *
 * With `partitions` K > 1 ('in-database' only), the events are split by the rows they write (an
 * alarm's vitrage_id, an edge's key) and the K partitions run the loop above concurrently, each
 * with its own checkpoint `<name>/<k>of<K>`, which is first raised to the common checkpoint
 * (everything up to it is applied in every partition) and then moved by compare-and-set like the
 * common one: a rebuild that deletes it makes the next move fail, and the partition resumes from
 * the common checkpoint again. When they are done (or closed), the common checkpoint moves to the
 * slowest partition and the partition checkpoints it reached are dropped (by any runner, with or
 * without partitions: left behind, they would hold `prune` back), so changing K later, or
 * running with K = 1, resumes from there. Meanwhile the tables of one partition may be ahead of
 * another's by a few ranges, which the order-tolerant merges allow; the runner's position is the
 * slowest one. A runner without partitions (the one in `run`) does not interleave its
 * transactions with theirs (store-postgres lockHistory).
 */
import {
  type AppendSignal,
  type BackoffPolicy,
  type CatchUpLoop,
  catchUpLoop,
  type EventLogReader,
  type Failure,
  failure,
  type HistoryCommand,
  type HistoryPartition,
  type HistoryStore,
  type Logger,
  requireNonNegativeInts,
  requirePositiveInts,
  silentLogger,
  STORE_CLOSED,
  type StoredEvent,
  waiters,
} from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import { HISTORY_EVENT_TYPES, historyCommand } from './commands.js'

export interface HistoryRunnerOptions {
  /** Checkpoint name. */
  readonly name: string
  /** Events per transaction at most: an id span 'in-database', history events 'in-node'. */
  readonly pageSize: number
  /** Where the rows are derived from the events (see the top of this module). */
  readonly derive: 'in-database' | 'in-node'
  /**
   * 'in-database' only: split the events by the rows they write into this many partitions,
   * applied concurrently (one connection each: the store's pool needs as many).
   */
  readonly partitions: number
  /** Poll this often even without append signals (a missed notification costs at most this). */
  readonly idlePollMs: number
  readonly retry: BackoffPolicy
}

export const defaultHistoryRunnerOptions: HistoryRunnerOptions = {
  name: 'history',
  pageSize: 5_000,
  derive: 'in-database',
  partitions: 1,
  idlePollMs: 5_000,
  retry: { initialMs: 200, maxMs: 10_000 },
}

export interface HistoryRunnerHooks {
  /**
   * After each applied range: its history events, those of them derived in Node (all of them
   * 'in-node'; 'in-database', those not in Vitrage's forms), and those skipped as anomalies.
   */
  readonly onPage?: (info: { readonly position: number; readonly head: number; readonly events: number; readonly inNode: number; readonly anomalies: number }) => void
}

export interface HistoryRunnerDeps {
  readonly reader: EventLogReader
  readonly store: HistoryStore
  /** Wake-ups on append (optional: without it the runner polls). */
  readonly signal?: AppendSignal
  readonly logger?: Logger
  readonly hooks?: HistoryRunnerHooks
}

export class HistoryRunner {
  private readonly options: HistoryRunnerOptions
  private readonly log: Logger
  private closed = false
  private readonly loop: CatchUpLoop
  private positionValue = 0

  constructor(
    private readonly deps: HistoryRunnerDeps,
    options: Partial<HistoryRunnerOptions> = {},
  ) {
    this.options = { ...defaultHistoryRunnerOptions, ...options }
    const { partitions, derive } = this.options
    if (!Number.isInteger(partitions) || partitions < 1 || (partitions > 1 && derive !== 'in-database')) {
      throw new TypeError(`HistoryRunner: partitions must be a positive integer, and 1 unless derive is 'in-database' (got ${partitions}, '${derive}')`)
    }
    requirePositiveInts('HistoryRunner', { pageSize: this.options.pageSize, idlePollMs: this.options.idlePollMs })
    this.log = (deps.logger ?? silentLogger).child({ component: 'history-runner', checkpoint: this.options.name })
    this.loop = catchUpLoop({
      step: async () => {
        const r = await this.catchUp()
        // The loop stops on a closed store: nothing will move the position any more.
        if (E.isLeft(r) && r.left.code === STORE_CLOSED) this.waiting.abandon('its store was closed')
        return r
      },
      ...(deps.signal ? { signal: deps.signal } : {}),
      idlePollMs: this.options.idlePollMs,
      retry: this.options.retry,
      logger: this.log,
      what: 'history projection',
    })
  }

  /** The checkpoint as this runner last saw it. */
  get position(): number {
    return this.positionValue
  }

  private readonly waiting = waiters()

  private moveTo(position: number): void {
    this.positionValue = position
    this.waiting.check()
  }

  /**
   * Resolves with the position once the projection has applied every event up to `id` (by a
   * started runner, or by catchUp() calls of your own). Rejects after `timeoutMs` when given (an
   * Error named TimeoutError), and when the runner or its store is closed first, each saying
   * where it was.
   */
  async caughtUp(id: number, options: { readonly timeoutMs?: number } = {}): Promise<number> {
    requireNonNegativeInts('HistoryRunner.caughtUp', { id, timeoutMs: options.timeoutMs })
    if (this.positionValue < id && this.closed) throw new Error(`the history runner is closed; it is at event ${this.positionValue}, before event ${id}`)
    await this.waiting.wait(() => this.positionValue >= id, {
      timeoutMs: options.timeoutMs,
      timedOut: () => `event ${id} not applied within ${options.timeoutMs} ms: the history projection is at event ${this.positionValue}`,
      abandoned: (why) => `${why} before event ${id} was applied; the history projection is at event ${this.positionValue}`,
    })
    return this.positionValue
  }

  /**
   * Applies everything up to the log's current head, then resolves with the checkpoint.
   * Failures are values: transient ones are not retried here (see start()).
   */
  async catchUp(): Promise<E.Either<Failure, number>> {
    const head = await this.deps.reader.headId()()
    if (E.isLeft(head)) return head
    const position = await this.deps.store.historyCheckpoint(this.options.name)()
    if (E.isLeft(position)) return position
    // Prune waits for this checkpoint once it exists; a projection started (or reset) after a
    // prune would miss what the deleted events held, so it does not start.
    if (position.right < head.right && this.deps.reader.prunedBelow !== undefined) {
      const prunedBelow = await this.deps.reader.prunedBelow()()
      if (E.isLeft(prunedBelow)) return prunedBelow
      if (position.right + 1 < prunedBelow.right) {
        return E.left(
          failure(
            'rejected',
            `events below ${prunedBelow.right} were pruned before the history projection read them (its checkpoint is ${position.right}): projecting the rest would leave out what they held`,
            'pruned',
          ),
        )
      }
    }
    const at = await (this.options.derive === 'in-database' ? this.catchUpInDatabase(position.right, head.right) : this.catchUpInNode(position.right, head.right))
    if (E.isLeft(at)) return at
    // The common checkpoint moves to the slowest partition, and partition checkpoints it has
    // passed (this run's, or those of an earlier run under another count, killed half-way) are
    // dropped: `prune` would wait for them forever. Without partitions this only drops those.
    const { name, partitions } = this.options
    const settled = await this.deps.store.settleHistoryPartitions(name, partitions === 1 ? 0 : partitions)()
    if (E.isRight(settled)) this.moveTo(settled.right)
    return settled
  }

  /** Commands for a page of events; anomalies are logged and counted, not applied. */
  private commandsFor(events: readonly StoredEvent[]): { commands: HistoryCommand[]; anomalies: number } {
    const commands: HistoryCommand[] = []
    let anomalies = 0
    for (const event of events) {
      const c = historyCommand(event)
      if (c === undefined) continue
      if (E.isRight(c)) commands.push(c.right)
      else {
        anomalies++
        this.log.warn({ ...c.left }, 'history event skipped')
      }
    }
    return { commands, anomalies }
  }

  /** After a checkpoint conflict: where the runner that won left the checkpoint (`resume`). */
  private async afterConflict(conflict: Failure, at: number, resume: () => Promise<E.Either<Failure, number>>): Promise<E.Either<Failure, number>> {
    if (conflict.code !== 'checkpoint-conflict') return E.left(conflict)
    const resumed = await resume()
    if (E.isLeft(resumed)) return resumed
    // Behind where this runner was: not another runner ahead of it, but a rebuild or a retire
    // (`checkpoint remove history --drop-history`) that emptied the tables meanwhile. This
    // catch-up ends; the next starts from the checkpoint with its checks (after a prune, the
    // log can no longer give the history back: it must not re-derive from what is left).
    if (resumed.right < at) {
      return E.left(failure('transient', `the history checkpoint went back from ${at} to ${resumed.right} (a rebuild or retire ran meanwhile); catching up again from it`, 'checkpoint-moved-back'))
    }
    // Debug: with two instances (one per persistor, a rolling update) each yields to the other
    // several times a second (review 60: ~6 lines a second at info for the whole rollout).
    this.log.debug({ at }, 'another runner applied this range; continuing from its checkpoint')
    return resumed
  }

  private async catchUpInDatabase(common: number, head: number): Promise<E.Either<Failure, number>> {
    const { name, partitions } = this.options
    // Nothing new (an idle wake-up while following): no partition checkpoint to create.
    if (common >= head) return E.right(common)
    if (partitions === 1) {
      return this.applyRanges(undefined, common, head, () => this.deps.store.historyCheckpoint(name)(), (at) => at)
    }
    // Partitions write disjoint rows, so they run concurrently, each on its own connection and
    // checkpoint; the common checkpoint then moves to the slowest of them.
    const positions = Array.from({ length: partitions }, () => common)
    const results = await Promise.all(
      positions.map(async (_, index) => {
        const partition = { index, of: partitions }
        const resume = () => this.deps.store.resumeHistoryPartition(name, partition)()
        const from = await resume()
        if (E.isLeft(from)) return from
        positions[index] = from.right
        return this.applyRanges(partition, from.right, head, resume, (at) => {
          positions[index] = at
          return Math.min(...positions)
        })
      }),
    )
    const failed = results.find(E.isLeft)
    return failed ?? E.right(Math.min(...positions))
  }

  /**
   * Applies (from, head] in ranges, moving the checkpoint (`partition`'s, if given).
   * `moved` learns each new position and answers the runner's position.
   */
  private async applyRanges(
    partition: HistoryPartition | undefined,
    from: number,
    head: number,
    resume: () => Promise<E.Either<Failure, number>>,
    moved: (at: number) => number,
  ): Promise<E.Either<Failure, number>> {
    let at = from
    while (at < head && !this.closed) {
      const to = Math.min(at + this.options.pageSize, head)
      let anomalies = 0
      const commandsFor = (events: readonly StoredEvent[]): HistoryCommand[] => {
        const derived = this.commandsFor(events)
        anomalies += derived.anomalies
        return derived.commands
      }
      const applied = await this.deps.store.applyHistoryRange(this.options.name, at, to, commandsFor, partition)()
      if (E.isLeft(applied)) {
        const resumed = await this.afterConflict(applied.left, at, resume)
        if (E.isLeft(resumed)) return resumed
        at = resumed.right
        continue
      }
      at = to
      this.moveTo(moved(at))
      this.deps.hooks?.onPage?.({ position: this.positionValue, head, events: applied.right.events, inNode: applied.right.handedOver, anomalies })
    }
    return E.right(at)
  }

  private async catchUpInNode(from: number, head: number): Promise<E.Either<Failure, number>> {
    let at = from
    const read = (after: number) => this.deps.reader.readPage(after, this.options.pageSize, { eventTypes: HISTORY_EVENT_TYPES, toId: head })()
    // The next page is read while this one is applied (the database does both, on two connections).
    let next = at < head ? read(at) : undefined
    while (next !== undefined && !this.closed) {
      const page = await next
      next = undefined
      if (E.isLeft(page)) return page
      const { commands, anomalies } = this.commandsFor(page.right)
      // A short page is the last one below head: the checkpoint can jump to head.
      const to = page.right.length < this.options.pageSize ? head : (page.right.at(-1)?.id ?? head)
      if (to < head) next = read(to)
      const applied = await this.deps.store.applyHistory(this.options.name, commands, at, to)()
      if (E.isLeft(applied)) {
        await next
        next = undefined
        const resumed = await this.afterConflict(applied.left, at, () => this.deps.store.historyCheckpoint(this.options.name)())
        if (E.isLeft(resumed)) return resumed
        at = resumed.right
        if (at < head) next = read(at)
        continue
      }
      at = to
      this.moveTo(at)
      this.deps.hooks?.onPage?.({ position: at, head, events: page.right.length, inNode: page.right.length, anomalies })
    }
    // Closed with a read ahead in flight: nothing started here outlives catchUp().
    await next
    return E.right(at)
  }

  /** Runs until close(): catches up, waits for appends, retries failures with backoff. */
  start(): void {
    this.loop.start()
  }

  /** Stops after the current page (whose transaction either commits or not). Idempotent. */
  async close(): Promise<void> {
    this.closed = true
    await this.loop.close()
    this.waiting.abandon('the history runner was closed')
  }
}
