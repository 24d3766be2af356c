/**
 * Appending a batch of decoded messages in one transaction (design §2, §4, §10).
 *
 * Fast path: one `COPY event (...) FROM STDIN` of the batch in delivery order, in autocommit. PostgreSQL parses
 * each payload text into jsonb (numbers stay exact) and draws ids in row order; the statement
 * trigger of migration 0001 serializes appenders, so ids become visible in increasing order.
 * COPY cannot skip rows, so a redelivered message (its message_id is already stored) makes it
 * fail with a unique violation; the batch is then appended by the slow path instead.
 *
 * Slow path: COPY into a session-local staging table, then one
 * `INSERT ... SELECT ... ORDER BY ord ON CONFLICT (message_id) DO NOTHING`. A message already
 * stored with the same payload is a duplicate (skipped); with a different payload it is a
 * conflict (a publisher reused an id), reported so that it is dead-lettered, not dropped.
 *
 * Redeliveries are rare (a restart's unacked window), so nearly every batch takes the fast path,
 * which is about 30% cheaper for the database than the staging path.
 */
import type { DecodedMessage, Failure } from '@vitrage-persistor/core'
import type pg from 'pg'
import { from as copyFrom } from 'pg-copy-streams'
import { classifyPgError } from './classify.js'
import { copyRow } from './copy-text.js'

export interface AppendResult {
  /** Batch indexes of the messages stored, in batch (and id) order. */
  readonly stored: readonly number[]
  /** Batch indexes of messages already stored with the same payload (redeliveries). */
  readonly duplicates: readonly number[]
  /** Batch indexes of messages whose id is stored with a different payload. */
  readonly conflicts: readonly number[]
  /** Batch indexes of `copiesOnly` messages whose id no stored event has: not stored. */
  readonly absent: readonly number[]
}

const EVENT_COLUMNS = 'message_id, event_type, publisher_id, priority, collector_timestamp, payload'

const STAGING_DDL = `CREATE TEMP TABLE IF NOT EXISTS event_staging (
  ord int NOT NULL,
  message_id uuid NOT NULL,
  event_type text NOT NULL,
  publisher_id text,
  priority text,
  collector_timestamp timestamptz NOT NULL,
  payload text NOT NULL
) ON COMMIT DELETE ROWS`

// $1: the ords never to insert (copiesOnly).
const INSERT_SQL = `INSERT INTO event (${EVENT_COLUMNS})
SELECT message_id, event_type, publisher_id, priority, collector_timestamp, payload::jsonb
FROM event_staging WHERE ord <> ALL($1::int[]) ORDER BY ord
ON CONFLICT (message_id) DO NOTHING
RETURNING message_id`

// Of the staged ords $1, those whose message_id is stored, and whether with another payload.
const STORED_SQL = `SELECT s.ord, e.payload IS DISTINCT FROM s.payload::jsonb AS differs FROM event_staging s JOIN event e ON e.message_id = s.message_id
WHERE s.ord = ANY($1::int[])`


/**
 * A decoded message with its COPY row already encoded. The persistor prepares each message as it
 * arrives, so the encoding is spread over the time the batch fills instead of delaying its
 * transaction.
 */
export interface PreparedEvent {
  readonly message: DecodedMessage
  /** The message as a COPY text row of `event (${EVENT_COLUMNS})`. */
  readonly row: string
}

export const prepareEvent = (m: DecodedMessage): PreparedEvent => ({
  message: m,
  row: copyRow([m.messageId, m.eventType, m.publisherId, m.priority, m.collectorTimestamp, m.payloadText]),
})

const eventRows = (batch: readonly PreparedEvent[]): string[] => batch.map((p) => p.row)

// The staging table has the event columns behind an ordinal.
const stagingRows = (batch: readonly PreparedEvent[]): string[] => batch.map((p, i) => `${i}\t${p.row}`)

/**
 * How much COPY text is encoded at a time. One string per batch would pass V8's string limit
 * (~512 MiB) with 1,000 rows of ~540 KB, under the default --max-message-bytes, and the batch
 * could never be written.
 */
export const COPY_CHUNK_CHARS = 1 << 20

/** Rows joined into chunks of at most `maxChars` (a longer row is a chunk of its own); pure. */
export function* copyChunks(rows: Iterable<string>, maxChars = COPY_CHUNK_CHARS): Generator<string> {
  let chunk = ''
  for (const row of rows) {
    if (chunk.length > 0 && chunk.length + row.length > maxChars) {
      yield chunk
      chunk = ''
    }
    chunk += row
  }
  if (chunk.length > 0) yield chunk
}

const copyInto = (client: pg.PoolClient | pg.Client, sql: string, rows: Iterable<string>): Promise<number> =>
  new Promise((resolve, reject) => {
    const stream = client.query(copyFrom(sql))
    stream.on('error', reject)
    stream.on('finish', () => resolve(stream.rowCount ?? 0))
    for (const chunk of copyChunks(rows)) stream.write(Buffer.from(chunk, 'utf8'))
    stream.end()
  })

const inTransaction = async <T>(client: pg.PoolClient | pg.Client, fn: () => Promise<T>): Promise<T> => {
  await client.query('BEGIN')
  try {
    const value = await fn()
    await client.query('COMMIT')
    return value
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {})
    throw e
  }
}

const UNIQUE_VIOLATION = '23505'

/**
 * Fast path: one COPY, in autocommit (a single statement is its own transaction, so the batch is
 * still all or nothing). One round trip per batch. Throws the driver error; a unique violation
 * means "take the slow path".
 */
const copyBatch = async (client: pg.PoolClient | pg.Client, batch: readonly PreparedEvent[]): Promise<AppendResult> => {
  await copyInto(client, `COPY event (${EVENT_COLUMNS}) FROM STDIN`, eventRows(batch))
  return { stored: batch.map((_, i) => i), duplicates: [], conflicts: [], absent: [] }
}

const NONE: ReadonlySet<number> = new Set()

/** Slow path: skips stored message ids, telling duplicates from conflicts; never inserts `copiesOnly`. */
const stageBatch = (client: pg.PoolClient | pg.Client, batch: readonly PreparedEvent[], copiesOnly: ReadonlySet<number>): Promise<AppendResult> =>
  inTransaction(client, async () => {
    await client.query(STAGING_DDL)
    await copyInto(client, 'COPY event_staging (ord, message_id, event_type, publisher_id, priority, collector_timestamp, payload) FROM STDIN', stagingRows(batch))
    const inserted = await client.query<{ message_id: string }>(INSERT_SQL, [[...copiesOnly]])
    const pendingIds = new Set(inserted.rows.map((r) => r.message_id))
    const stored: number[] = []
    const notInserted: number[] = []
    for (let i = 0; i < batch.length; i++) {
      const messageId = (batch[i] as PreparedEvent).message.messageId
      if (!copiesOnly.has(i) && pendingIds.has(messageId)) {
        stored.push(i)
        // The first occurrence in the batch is the one inserted; later ones are duplicates.
        pendingIds.delete(messageId)
      } else {
        notInserted.push(i)
      }
    }
    const differs = new Map<number, boolean>()
    if (notInserted.length > 0) {
      for (const r of (await client.query<{ ord: number; differs: boolean }>(STORED_SQL, [notInserted])).rows) differs.set(r.ord, r.differs)
    }
    // Not found now: a copy whose id no event has, or another message whose stored twin a prune
    // deleted between the two statements (read committed), which stays a duplicate, as it was.
    return {
      stored,
      duplicates: notInserted.filter((i) => differs.get(i) === false || (!differs.has(i) && !copiesOnly.has(i))),
      conflicts: notInserted.filter((i) => differs.get(i) === true),
      absent: notInserted.filter((i) => !differs.has(i) && copiesOnly.has(i)),
    }
  })

/**
 * Appends `batch` in one transaction on `client` (which must not be in a transaction). The
 * messages at `copiesOnly` (batch indexes) are never stored: each is reported a duplicate or a
 * conflict when an event with its message_id is stored (in this batch too), else absent.
 * Throws the driver error; callers classify it with `classifyPgError`.
 */
export const appendBatch = async (client: pg.PoolClient | pg.Client, batch: readonly PreparedEvent[], copiesOnly: ReadonlySet<number> = NONE): Promise<AppendResult> => {
  if (batch.length === 0) return { stored: [], duplicates: [], conflicts: [], absent: [] }
  if (copiesOnly.size > 0) return stageBatch(client, batch, copiesOnly)
  try {
    return await copyBatch(client, batch)
  } catch (e) {
    if ((e as { code?: unknown }).code !== UNIQUE_VIOLATION) throw e
    return stageBatch(client, batch, NONE)
  }
}

export interface IsolatedAppendResult extends AppendResult {
  /** Batch indexes the database refused even alone, with its reason. */
  readonly refused: ReadonlyArray<{ readonly index: number; readonly failure: Failure }>
}

/**
 * Appends a batch; when the database refuses it (a data error, not a connection problem), splits
 * it in halves until each refused message is alone, so one bad row costs its batch log2(n) extra
 * transactions instead of being lost or taking its neighbours down with it. Order is kept: the
 * halves are appended left first. Transient and fatal failures are thrown for the caller to
 * retry the whole batch (appending is idempotent, so already-committed halves are duplicates).
 */
export const appendIsolating = async (
  client: pg.PoolClient | pg.Client,
  batch: readonly PreparedEvent[],
  scrub: (s: string) => string = (s) => s,
  copiesOnly: ReadonlySet<number> = NONE,
): Promise<IsolatedAppendResult> => {
  const stored: number[] = []
  const duplicates: number[] = []
  const conflicts: number[] = []
  const absent: number[] = []
  const refused: Array<{ index: number; failure: Failure }> = []
  const go = async (offset: number, part: readonly PreparedEvent[]): Promise<void> => {
    try {
      const mine = copiesOnly.size === 0 ? NONE : new Set([...copiesOnly].filter((i) => i >= offset && i < offset + part.length).map((i) => i - offset))
      const r = await appendBatch(client, part, mine)
      for (const i of r.stored) stored.push(i + offset)
      for (const i of r.duplicates) duplicates.push(i + offset)
      for (const i of r.conflicts) conflicts.push(i + offset)
      for (const i of r.absent) absent.push(i + offset)
    } catch (e) {
      const f = classifyPgError(e, scrub)
      if (f.kind !== 'rejected') throw e
      if (part.length === 1) {
        refused.push({ index: offset, failure: f })
        return
      }
      const half = Math.ceil(part.length / 2)
      await go(offset, part.slice(0, half))
      await go(offset + half, part.slice(half))
    }
  }
  await go(0, batch)
  // Split around a refused row, a copy may have been looked up before its twin, later in the
  // batch, was stored: looked up again, on their own.
  if (refused.length > 0 && absent.length > 0) {
    const again = await appendBatch(client, absent.map((i) => batch[i] as PreparedEvent), new Set(absent.keys()))
    const back = (is: readonly number[]): number[] => is.map((j) => absent[j] as number)
    for (const i of back(again.duplicates)) duplicates.push(i)
    for (const i of back(again.conflicts)) conflicts.push(i)
    const still = back(again.absent)
    absent.length = 0
    absent.push(...still)
    duplicates.sort((a, b) => a - b)
    conflicts.sort((a, b) => a - b)
  }
  return { stored, duplicates, conflicts, absent, refused }
}
