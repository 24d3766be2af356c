/** Reading the log in id order, a keyset page at a time (bounded memory, never OFFSET). */
import type { RawEvent, ReadPageOptions, StoredEvent } from '@vitrage-persistor/core'
export type { RawEvent } from '@vitrage-persistor/core'
import type pg from 'pg'

export type ReadOptions = ReadPageOptions

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

/** The page query (through migration 0005's event_page, whose plan cannot degrade). Pure. */
export const pageQuery = (afterId: number, limit: number, options: ReadOptions = {}): { text: string; values: unknown[] } => ({
  text: 'SELECT * FROM event_page($1, $2, $3, $4)',
  values: [afterId, options.toId ?? null, options.eventTypes ?? null, limit],
})

/**
 * A row's fields but the payload; each reader then adds its own payload property. Adding one
 * property costs what a literal does, where spreading a shared header into each event cost
 * ~3 µs a row (measured in the mirror's profile: 1,300 ms against 40 ms per 500,000 rows).
 */
const header = (r: Row): Omit<StoredEvent, 'payload'> => ({
  id: Number(r.id),
  messageId: r.message_id,
  eventType: r.event_type,
  publisherId: r.publisher_id,
  priority: r.priority,
  collectorTimestamp: r.collector_timestamp,
  persistedAt: r.persisted_at,
})

// Parsing payload text in JavaScript is faster than letting pg parse jsonb (design §10).
const toEvent = (r: Row): StoredEvent => {
  const e: Omit<StoredEvent, 'payload'> & { payload?: StoredEvent['payload'] } = header(r)
  e.payload = JSON.parse(r.payload) as Record<string, unknown>
  return e as StoredEvent
}

const toRawEvent = (r: Row): RawEvent => {
  const e: Omit<StoredEvent, 'payload'> & { payloadText?: string } = header(r)
  e.payloadText = r.payload
  return e as RawEvent
}

export const readPage = async (client: pg.Pool | pg.PoolClient | pg.Client, afterId: number, limit: number, options?: ReadOptions): Promise<StoredEvent[]> => {
  const q = pageQuery(afterId, limit, options)
  const result = await client.query<Row>(q)
  return result.rows.map(toEvent)
}

export const readRawPage = async (client: pg.Pool | pg.PoolClient | pg.Client, afterId: number, limit: number, options?: ReadOptions): Promise<RawEvent[]> => {
  const q = pageQuery(afterId, limit, options)
  const result = await client.query<Row>(q)
  return result.rows.map(toRawEvent)
}

/** The events with these ids, in id order (the columns and forms of event_page). */
export const readEventsById = async (client: pg.Pool | pg.PoolClient | pg.Client, ids: readonly number[]): Promise<StoredEvent[]> => {
  const result = await client.query<Row>(
    `SELECT e.id, e.message_id, e.event_type, e.publisher_id, e.priority,
            to_char(e.collector_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS collector_timestamp,
            to_char(e.persisted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS persisted_at,
            e.payload::text AS payload
     FROM event e WHERE e.id = ANY ($1::bigint[]) ORDER BY e.id`,
    [ids],
  )
  return result.rows.map(toEvent)
}
