/** Prometheus metrics of the persistor (docs/operations.md explains each). */
import { REJECTION_REASONS } from '@vitrage-persistor/core'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'

/** The persistor's two broker connections (their names in `connection_name` and in metrics). */
export const BROKER_CONNECTIONS = ['consume', 'dead-letters'] as const

export interface IngestMetrics {
  readonly stored: Counter
  readonly duplicates: Counter
  readonly deadLettered: Counter<'reason'>
  readonly redelivered: Counter
  readonly batchSize: Histogram
  readonly appendSeconds: Histogram
  readonly appendRetries: Counter<'kind'>
  readonly queueDepth: Gauge
  readonly deadLetterQueueDepth: Gauge
  readonly brokerConnected: Gauge
  readonly brokerBlocked: Gauge<'connection'>
  readonly databaseConnected: Gauge
  readonly inFlight: Gauge
}

export const createIngestMetrics = (registry: Registry): IngestMetrics => {
  const registers = [registry]
  // Every label value is exported from the start, so a rate() or an alert over it works before
  // the first one (a series that appears at 1 has no increase to see).
  const countedFromZero = <L extends string>(metric: { name: string; help: string }, label: L, values: readonly string[]): Counter<L> => {
    const c = new Counter({ ...metric, labelNames: [label], registers })
    for (const v of values) c.labels(v).inc(0)
    return c
  }
  const deadLettered = countedFromZero(
    { name: 'vitrage_persistor_dead_lettered_total', help: 'Messages sent to the dead-letter queue, by reason (x-persistor-error).' },
    'reason',
    REJECTION_REASONS,
  )
  const appendRetries = countedFromZero(
    { name: 'vitrage_persistor_append_retries_total', help: 'Append attempts that failed and were retried, by failure kind (transient, fatal).' },
    'kind',
    ['transient', 'fatal'],
  )
  const brokerBlocked = new Gauge({
    name: 'vitrage_persistor_broker_blocked',
    help: '1 while the broker blocks the connection (memory or disk alarm), by connection (consume, dead letters).',
    labelNames: ['connection'],
    registers,
  })
  for (const connection of BROKER_CONNECTIONS) brokerBlocked.labels(connection).set(0)
  return {
    stored: new Counter({ name: 'vitrage_persistor_events_stored_total', help: 'Events appended to the event table.', registers }),
    duplicates: new Counter({
      name: 'vitrage_persistor_events_duplicate_total',
      help: 'Redelivered messages already stored (same message_id and payload): acked, not stored again.',
      registers,
    }),
    deadLettered,
    redelivered: new Counter({ name: 'vitrage_persistor_redelivered_total', help: 'Deliveries the broker flagged as redelivered.', registers }),
    batchSize: new Histogram({
      name: 'vitrage_persistor_batch_size',
      help: 'Messages per batch (stored, duplicate and rejected).',
      buckets: [1, 10, 50, 100, 250, 500, 1000, 2000, 5000],
      registers,
    }),
    appendSeconds: new Histogram({
      name: 'vitrage_persistor_append_duration_seconds',
      help: 'Time to append one batch, transaction included, retries excluded.',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    appendRetries,
    queueDepth: new Gauge({ name: 'vitrage_persistor_queue_depth', help: 'Messages ready in the consumed queue (sampled).', registers }),
    deadLetterQueueDepth: new Gauge({
      name: 'vitrage_persistor_dead_letter_queue_depth',
      help: 'Dead letters waiting in <queue>.dead (sampled): `vitrage-persistor dead-letters list` shows them.',
      registers,
    }),
    brokerConnected: new Gauge({ name: 'vitrage_persistor_broker_connected', help: '1 while consuming from the broker.', registers }),
    brokerBlocked,
    databaseConnected: new Gauge({ name: 'vitrage_persistor_database_connected', help: '1 while the last database operation succeeded.', registers }),
    inFlight: new Gauge({ name: 'vitrage_persistor_in_flight_messages', help: 'Delivered, not yet acked messages held by the process.', registers }),
  }
}
