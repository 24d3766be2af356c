/** Reading the log in id order, a keyset page at a time (bounded memory, never OFFSET). */
import type { ReadPageOptions, StoredEvent } from '@vitrage-persistor/core'
import type pg from 'pg'

export type ReadOptions = ReadPageOptions

const COLUMNS = `id, message_id, event_type, publisher_id, priority,
  to_char(collector_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS collector_timestamp,
  to_char(persisted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS persisted_at,
  payload::text AS payload`

interface Row {
  id: string
  message_id: string
  event_type: string
  publisher_id: string | null
  priority: string | null
  collector_timestamp: string
  persisted_at: string
  payload: string
}

/** Builds the page query; pure, so the SQL is tested without a server. */
export const pageQuery = (afterId: number, limit: number, options: ReadOptions = {}): { text: string; values: unknown[] } => {
  const values: unknown[] = [afterId]
  const where = ['id > $1']
  if (options.toId !== undefined) {
    values.push(options.toId)
    where.push(`id <= $${values.length}`)
  }
  if (options.eventTypes !== undefined) {
    values.push(options.eventTypes)
    where.push(`event_type = ANY($${values.length}::text[])`)
  }
  values.push(limit)
  return { text: `SELECT ${COLUMNS} FROM event WHERE ${where.join(' AND ')} ORDER BY id LIMIT $${values.length}`, values }
}

// Parsing payload text in JavaScript is faster than letting pg parse jsonb (design §10).
const toEvent = (r: Row): StoredEvent => ({
  id: Number(r.id),
  messageId: r.message_id,
  eventType: r.event_type,
  publisherId: r.publisher_id,
  priority: r.priority,
  collectorTimestamp: r.collector_timestamp,
  persistedAt: r.persisted_at,
  payload: JSON.parse(r.payload) as Record<string, unknown>,
})

export const readPage = async (client: pg.Pool | pg.PoolClient | pg.Client, afterId: number, limit: number, options?: ReadOptions): Promise<StoredEvent[]> => {
  const q = pageQuery(afterId, limit, options)
  const result = await client.query<Row>(q)
  return result.rows.map(toEvent)
}

/** An event with its payload as stored JSON text (for republishing it exactly). */
export interface RawEvent {
  readonly id: number
  readonly messageId: string
  readonly eventType: string
  readonly publisherId: string | null
  readonly priority: string | null
  readonly collectorTimestamp: string
  readonly payloadText: string
}

export const readRawPage = async (client: pg.Pool | pg.PoolClient | pg.Client, afterId: number, limit: number, options?: ReadOptions): Promise<RawEvent[]> => {
  const q = pageQuery(afterId, limit, options)
  const result = await client.query<Row>(q)
  return result.rows.map((r) => ({
    id: Number(r.id),
    messageId: r.message_id,
    eventType: r.event_type,
    publisherId: r.publisher_id,
    priority: r.priority,
    collectorTimestamp: r.collector_timestamp,
    payloadText: r.payload,
  }))
}
