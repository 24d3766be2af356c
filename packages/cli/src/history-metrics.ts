/**
 * The alarm-history projection's metrics, wherever it runs: inside `run`, or alone as `project
 * history --follow` (so that the history alerts and dashboard panels watch it there too).
 */
import { type Failure, failure, within } from '@vitrage-persistor/core'
import type { HistoryRunnerHooks } from '@vitrage-persistor/projections'
import * as E from 'fp-ts/lib/Either.js'
import type * as TE from 'fp-ts/lib/TaskEither.js'
import { Counter, Gauge, type Registry } from 'prom-client'
import { DATABASE_WAIT_MS } from './resources.js'

/** What the lag is read from, at each scrape (undefined: not yet, so no value). */
export interface HistoryLagSource {
  readonly headId: () => TE.TaskEither<Failure, number>
  readonly historyCheckpoint: (name: string) => TE.TaskEither<Failure, number>
}


/**
 * `lagSource`: the store to read the lag from at each scrape; `position`: the runner's position
 * (from its checkpoint once started), so that a projection with nothing to apply does not read 0.
 */
export const createHistoryMetrics = (registry: Registry, lagSource: () => HistoryLagSource | undefined, position: () => number | undefined) => {
  const metrics = {
    position: new Gauge({
      name: 'vitrage_persistor_history_position',
      help: 'Last event id the alarm-history projection has applied.',
      registers: [registry],
      collect() {
        const p = position()
        if (p !== undefined) this.set(p)
      },
    }),
    events: new Counter({
      name: 'vitrage_persistor_history_events_total',
      help: 'Alarm-history events the projection applied, by where their rows were derived (database: the fast path for the forms Vitrage writes; node: any other form).',
      labelNames: ['derived'] as const,
      registers: [registry],
    }),
    anomalies: new Counter({ name: 'vitrage_persistor_history_anomalies_total', help: 'Alarm-history events skipped as unusable (logged with their reason).', registers: [registry] }),
    lag: new Gauge({
      name: 'vitrage_persistor_history_lag_events',
      help: 'Events stored past the alarm-history checkpoint (read from the database at each scrape).',
      registers: [registry],
      // Read when scraped: between two pages the projection's own position says nothing of
      // what arrived meanwhile. Bounded, so that a database that stopped answering does not
      // hang the scrape (nor the shutdown's HTTP close behind it); then unknown (NaN).
      async collect() {
        const store = lagSource()
        if (store === undefined) return
        const unanswered = E.left(failure('transient', `no answer within ${DATABASE_WAIT_MS} ms`))
        const [head, checkpoint] = await Promise.all([
          within(store.headId()(), DATABASE_WAIT_MS, unanswered),
          within(store.historyCheckpoint('history')(), DATABASE_WAIT_MS, unanswered),
        ])
        this.set(E.isRight(head) && E.isRight(checkpoint) ? Math.max(0, head.right - checkpoint.right) : Number.NaN)
      },
    }),
  }
  for (const derived of ['database', 'node']) metrics.events.labels(derived).inc(0)
  return metrics
}

export type HistoryMetrics = ReturnType<typeof createHistoryMetrics>

/** The runner's page hook that counts into the metrics. */
export const countPage =
  (m: HistoryMetrics): NonNullable<HistoryRunnerHooks['onPage']> =>
  (p) => {
    m.position.set(p.position)
    m.events.inc({ derived: 'database' }, p.events - p.inNode)
    m.events.inc({ derived: 'node' }, p.inNode)
    m.anomalies.inc(p.anomalies)
  }
