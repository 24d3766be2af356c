/**
 * Appending a batch of decoded messages in one transaction (design §2, §4, §10).
 *
 * The batch is COPYed as raw message text into a session-local staging table, then moved with
 * one `INSERT ... SELECT ... ORDER BY ord ON CONFLICT (message_id) DO NOTHING`. PostgreSQL
 * parses the text into jsonb (keeping numbers exact) and draws ids in delivery order; COPY is
 * about twice as fast as a parameterized multi-row insert at these sizes.
 *
 * A message whose id is already stored is a redelivery and is skipped, unless its payload
 * differs from the stored one: that is a publisher bug (two events, one id) and the second is
 * reported as a conflict so that it can be dead-lettered rather than silently dropped.
 */
import type { DecodedMessage, Failure } from '@vitrage-persistor/core'
import type pg from 'pg'
import { from as copyFrom } from 'pg-copy-streams'
import { classifyPgError } from './classify.js'
import { copyRow } from './copy-text.js'

export interface AppendResult {
  /** Ids assigned to stored messages, in batch order. */
  readonly stored: ReadonlyArray<{ readonly index: number; readonly id: number }>
  /** Batch indexes of messages already stored with the same payload (redeliveries). */
  readonly duplicates: readonly number[]
  /** Batch indexes of messages whose id is stored with a different payload. */
  readonly conflicts: readonly number[]
}

const STAGING_DDL = `CREATE TEMP TABLE IF NOT EXISTS event_staging (
  ord int NOT NULL,
  message_id uuid NOT NULL,
  event_type text NOT NULL,
  publisher_id text,
  priority text,
  collector_timestamp timestamptz NOT NULL,
  message text NOT NULL
) ON COMMIT DELETE ROWS`

const COPY_SQL = 'COPY event_staging (ord, message_id, event_type, publisher_id, priority, collector_timestamp, message) FROM STDIN'

const INSERT_SQL = `INSERT INTO event (message_id, event_type, publisher_id, priority, collector_timestamp, payload)
SELECT message_id, event_type, publisher_id, priority, collector_timestamp, message::jsonb -> 'payload'
FROM event_staging ORDER BY ord
ON CONFLICT (message_id) DO NOTHING
RETURNING id, message_id`

const CONFLICT_SQL = `SELECT s.ord FROM event_staging s JOIN event e ON e.message_id = s.message_id
WHERE s.ord = ANY($1::int[]) AND e.payload IS DISTINCT FROM (s.message::jsonb -> 'payload')`

/** Encodes a batch as COPY text. Exported for the benchmark and tests. */
export const stagingRows = (batch: readonly DecodedMessage[]): string => {
  let out = ''
  for (let i = 0; i < batch.length; i++) {
    const m = batch[i] as DecodedMessage
    out += copyRow([i, m.messageId, m.eventType, m.publisherId, m.priority, m.collectorTimestamp, m.messageText])
  }
  return out
}

const copyInto = (client: pg.PoolClient | pg.Client, text: string): Promise<void> =>
  new Promise((resolve, reject) => {
    const stream = client.query(copyFrom(COPY_SQL))
    stream.on('error', reject)
    stream.on('finish', () => resolve())
    stream.end(Buffer.from(text, 'utf8'))
  })

/**
 * Appends `batch` in one transaction on `client` (which must not be in a transaction).
 * Throws the driver error; callers classify it with `classifyPgError`.
 */
export const appendBatch = async (client: pg.PoolClient | pg.Client, batch: readonly DecodedMessage[]): Promise<AppendResult> => {
  if (batch.length === 0) return { stored: [], duplicates: [], conflicts: [] }
  await client.query('BEGIN')
  try {
    await client.query(STAGING_DDL)
    await copyInto(client, stagingRows(batch))
    const inserted = await client.query<{ id: string; message_id: string }>(INSERT_SQL)
    const idsByMessage = new Map<string, string>()
    for (const r of inserted.rows) idsByMessage.set(r.message_id, r.id)
    const stored: Array<{ index: number; id: number }> = []
    const notInserted: number[] = []
    for (let i = 0; i < batch.length; i++) {
      const messageId = (batch[i] as DecodedMessage).messageId
      const id = idsByMessage.get(messageId)
      if (id !== undefined) {
        stored.push({ index: i, id: Number(id) })
        // The first occurrence in the batch is the one inserted; later ones are duplicates.
        idsByMessage.delete(messageId)
      } else {
        notInserted.push(i)
      }
    }
    let conflicts: number[] = []
    if (notInserted.length > 0) {
      conflicts = (await client.query<{ ord: number }>(CONFLICT_SQL, [notInserted])).rows.map((r) => r.ord).sort((a, b) => a - b)
    }
    await client.query('COMMIT')
    const conflictSet = new Set(conflicts)
    return { stored, duplicates: notInserted.filter((i) => !conflictSet.has(i)), conflicts }
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {})
    throw e
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
  batch: readonly DecodedMessage[],
  scrub: (s: string) => string = (s) => s,
): Promise<IsolatedAppendResult> => {
  const stored: Array<{ index: number; id: number }> = []
  const duplicates: number[] = []
  const conflicts: number[] = []
  const refused: Array<{ index: number; failure: Failure }> = []
  const go = async (offset: number, part: readonly DecodedMessage[]): Promise<void> => {
    try {
      const r = await appendBatch(client, part)
      for (const s of r.stored) stored.push({ index: s.index + offset, id: s.id })
      for (const i of r.duplicates) duplicates.push(i + offset)
      for (const i of r.conflicts) conflicts.push(i + offset)
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
  return { stored, duplicates, conflicts, refused }
}
