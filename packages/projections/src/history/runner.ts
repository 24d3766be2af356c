/**
 * The history projection runner: reads the event log in id order from its checkpoint and
 * applies each page's commands together with the checkpoint (one transaction), so stopping it
 * at any moment, or running a page twice, changes nothing.
 *
 * Loop (states: idle -> catching-up -> idle ...; close() from any state -> closed):
 *   head := the log's highest id (ids become visible in order, so nothing at or below it can
 *           appear later);
 *   while checkpoint < head: read up to pageSize history events in (checkpoint, head], turn them
 *           into commands, apply them moving the checkpoint to the last id read (or to head when
 *           the page was the last one), reading the next page meanwhile;
 *   then wait for an append signal (or the idle poll interval).
 * Two runners may run (one per persistor instance): the checkpoint is compare-and-set, so the one
 * that loses a page re-reads the checkpoint and goes on from there.
 */
import {
  type AppendSignal,
  type BackoffPolicy,
  type CatchUpLoop,
  catchUpLoop,
  type EventLogReader,
  type Failure,
  type HistoryStore,
  type Logger,
  silentLogger,
} from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import { HISTORY_EVENT_TYPES, historyCommand } from './commands.js'

export interface HistoryRunnerOptions {
  /** Checkpoint name. */
  readonly name: string
  readonly pageSize: number
  /** Poll this often even without append signals (a missed notification costs at most this). */
  readonly idlePollMs: number
  readonly retry: BackoffPolicy
}

export const defaultHistoryRunnerOptions: HistoryRunnerOptions = {
  name: 'history',
  pageSize: 5_000,
  idlePollMs: 5_000,
  retry: { initialMs: 200, maxMs: 10_000 },
}

export interface HistoryRunnerHooks {
  /** After each applied page. */
  readonly onPage?: (info: { readonly position: number; readonly head: number; readonly events: number; readonly anomalies: number }) => void
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
    this.log = (deps.logger ?? silentLogger).child({ component: 'history-runner', checkpoint: this.options.name })
    this.loop = catchUpLoop({
      step: () => this.catchUp(),
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

  /**
   * Applies everything up to the log's current head, then resolves with the checkpoint.
   * Failures are values: transient ones are not retried here (see start()).
   */
  async catchUp(): Promise<E.Either<Failure, number>> {
    const head = await this.deps.reader.headId()()
    if (E.isLeft(head)) return head
    let position = await this.deps.store.historyCheckpoint(this.options.name)()
    if (E.isLeft(position)) return position
    let at = position.right
    const read = (from: number) => this.deps.reader.readPage(from, this.options.pageSize, { eventTypes: HISTORY_EVENT_TYPES, toId: head.right })()
    // The next page is read while this one is applied (the database does both, on two connections).
    let next = at < head.right ? read(at) : undefined
    while (next !== undefined && !this.closed) {
      const page = await next
      next = undefined
      if (E.isLeft(page)) return page
      const commands = []
      let anomalies = 0
      for (const event of page.right) {
        const c = historyCommand(event)
        if (c === undefined) continue
        if (E.isRight(c)) commands.push(c.right)
        else {
          anomalies++
          this.log.warn({ ...c.left }, 'history event skipped')
        }
      }
      // A short page is the last one below head: the checkpoint can jump to head.
      const to = page.right.length < this.options.pageSize ? head.right : (page.right.at(-1)?.id ?? head.right)
      if (to < head.right) next = read(to)
      const applied = await this.deps.store.applyHistory(this.options.name, commands, at, to)()
      if (E.isLeft(applied)) {
        await next
        next = undefined
        if (applied.left.code !== 'checkpoint-conflict') return applied
        this.log.info({ at }, 'another runner applied this page; continuing from its checkpoint')
        position = await this.deps.store.historyCheckpoint(this.options.name)()
        if (E.isLeft(position)) return position
        at = position.right
        if (at < head.right) next = read(at)
        continue
      }
      at = to
      this.positionValue = at
      this.deps.hooks?.onPage?.({ position: at, head: head.right, events: page.right.length, anomalies })
    }
    // Closed with a read ahead in flight: nothing started here outlives catchUp().
    await next
    this.positionValue = at
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
  }
}
