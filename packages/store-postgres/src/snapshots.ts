/** Projection snapshots (migration 0003): SQL for saving, finding, listing and retaining them. */
import type { NewSnapshot, Snapshot, SnapshotMeta } from '@vitrage-persistor/core'
import type pg from 'pg'

const META_COLUMNS = `s.id, s.kind, s.event_id,
  to_char(s.collector_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS collector_timestamp,
  s.format, s.stats, to_char(s.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at,
  octet_length(s.data) AS bytes`

interface MetaRow {
  id: string
  kind: string
  event_id: string
  collector_timestamp: string | null
  format: string
  stats: Record<string, unknown>
  created_at: string
  bytes: number
}

const toMeta = (r: MetaRow): SnapshotMeta => ({
  id: Number(r.id),
  kind: r.kind,
  eventId: Number(r.event_id),
  collectorTimestamp: r.collector_timestamp,
  format: r.format,
  stats: r.stats,
  createdAt: r.created_at,
  bytes: r.bytes,
})

type Queryable = pg.Pool | pg.PoolClient | pg.Client

/**
 * Saves a snapshot; saving the same (kind, event id) again replaces it. With `eventMessageId`,
 * only while the log's event `eventId` has that message_id: undefined when it does not.
 */
export const saveSnapshot = async (db: Queryable, s: NewSnapshot): Promise<SnapshotMeta | undefined> => {
  const { rows } = await db.query<MetaRow>(
    `WITH saved AS (
       INSERT INTO projection_snapshot (kind, event_id, collector_timestamp, format, data, stats)
       SELECT $1, $2, (SELECT collector_timestamp FROM event WHERE id = $2), $3, $4, $5
       WHERE $6::uuid IS NULL OR EXISTS (SELECT 1 FROM event WHERE id = $2 AND message_id = $6::uuid)
       ON CONFLICT (kind, event_id) DO UPDATE SET format = EXCLUDED.format, data = EXCLUDED.data,
         stats = EXCLUDED.stats, collector_timestamp = EXCLUDED.collector_timestamp, created_at = now()
       RETURNING *)
     SELECT ${META_COLUMNS} FROM saved s`,
    // The message goes into stats as well: a reader can then tell a snapshot of another history
    // (the event table restored without its snapshots) from one of this log (graphAt).
    [s.kind, s.eventId, s.format, Buffer.from(s.data.buffer, s.data.byteOffset, s.data.byteLength), s.eventMessageId === undefined ? (s.stats ?? {}) : { ...s.stats, eventMessageId: s.eventMessageId }, s.eventMessageId ?? null],
  )
  const r = rows[0]
  return r === undefined ? undefined : toMeta(r)
}

export const latestSnapshot = async (db: Queryable, kind: string, atOrBeforeEventId?: number): Promise<Snapshot | undefined> => {
  const { rows } = await db.query<MetaRow & { data: Buffer }>(
    `SELECT ${META_COLUMNS}, s.data FROM projection_snapshot s
     WHERE s.kind = $1 AND ($2::bigint IS NULL OR s.event_id <= $2)
     ORDER BY s.event_id DESC LIMIT 1`,
    [kind, atOrBeforeEventId ?? null],
  )
  const r = rows[0]
  return r === undefined ? undefined : { ...toMeta(r), data: r.data }
}

export const listSnapshots = async (db: Queryable, kind: string): Promise<SnapshotMeta[]> =>
  (await db.query<MetaRow>(`SELECT ${META_COLUMNS} FROM projection_snapshot s WHERE s.kind = $1 ORDER BY s.event_id`, [kind])).rows.map(toMeta)

/**
 * Snapshots not of this log: each names the message of its event (stats.eventMessageId) and the
 * log holds another there, or none (the event table restored or failed over without its
 * snapshots). Readers pass them over and prune does not count them (migration 0014).
 */
export const foreignSnapshots = async (db: Queryable, kind: string): Promise<SnapshotMeta[]> =>
  (
    await db.query<MetaRow>(
      `SELECT ${META_COLUMNS} FROM projection_snapshot s
       WHERE s.kind = $1 AND jsonb_typeof(s.stats -> 'eventMessageId') = 'string'
         AND NOT EXISTS (SELECT 1 FROM event e WHERE e.id = s.event_id AND e.message_id::text = s.stats ->> 'eventMessageId')
       ORDER BY s.event_id`,
      [kind],
    )
  ).rows.map(toMeta)

export const retainSnapshots = async (db: Queryable, kind: string, keep: number): Promise<number> =>
  (
    await db.query(
      `DELETE FROM projection_snapshot WHERE kind = $1 AND id NOT IN
         (SELECT id FROM projection_snapshot WHERE kind = $1 ORDER BY event_id DESC, id DESC LIMIT $2)`,
      [kind, keep],
    )
  ).rowCount ?? 0

/** Id of the last event, in id order, whose collector_timestamp is <= `timestamp`; 0 if none. */
export const lastEventAtOrBefore = async (db: Queryable, timestamp: string): Promise<number> =>
  Number((await db.query<{ id: string | null }>('SELECT max(id) AS id FROM event WHERE collector_timestamp <= $1', [timestamp])).rows[0]?.id ?? 0)

/** Every event with an id below this was pruned (migration 0008's watermark; 1 when none was). */
export const prunedBelow = async (db: Queryable): Promise<number> =>
  Number((await db.query<{ p: string }>('SELECT pruned_below AS p FROM event_retention')).rows[0]?.p ?? 1)

/**
 * Where retention stands: every event below `prunedBelow` is gone, and `prunedThrough` is the
 * newest collector_timestamp a prune deleted (canonical UTC text; null while none did, and on a
 * schema before migration 0010).
 */
export const retentionWatermark = async (db: Queryable): Promise<{ prunedBelow: number; prunedThrough: string | null }> => {
  // Through to_jsonb, so that a schema without the column (before 0010) reads null, not an error.
  const r = await db.query<{ below: string; through: string | null }>(
    `SELECT pruned_below AS below,
            to_char((to_jsonb(r) ->> 'pruned_through')::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS through
       FROM event_retention r`,
  )
  return { prunedBelow: Number(r.rows[0]?.below ?? 1), prunedThrough: r.rows[0]?.through ?? null }
}

/** How many ids one step of a prune covers (~1.6 s a million on the benchmark machine). */
export const PRUNE_STEP_IDS = 1_000_000

/**
 * Runs the retention routine (migrations 0003, 0008, 0009); returns the number of events
 * deleted. In steps of `stepIds` ids, each its own transaction, so that no statement outlives
 * the statement timeout however long the history: each step is `event_prune(below, from)` with
 * a rising `below`, and still stops at the snapshots and checkpoints as they are when it runs.
 * Each step pins READ COMMITTED (event_prune refuses anything else: its snapshot must follow
 * its lock wait), whatever the database's default_transaction_isolation. `db` is one
 * connection, not a pool (a transaction per step).
 */
export const pruneEvents = async (db: pg.PoolClient | pg.Client, below?: number, stepIds: number = PRUNE_STEP_IDS): Promise<number> => {
  if (!Number.isSafeInteger(stepIds) || stepIds < 1) throw new TypeError(`pruneEvents: stepIds must be a positive integer, got ${stepIds}`)
  const target = Number((await db.query<{ w: string }>('SELECT event_prune_watermark($1) AS w', [below ?? null])).rows[0]?.w)
  const first = (await db.query<{ id: string | null }>('SELECT min(id) AS id FROM event')).rows[0]?.id
  let deleted = 0
  // One step at least: it also records a watermark past ids that hold no event. The first step
  // starts from the first stored event (rows restored below the watermark go too), each later
  // one from where the last was meant to end, or below it from the recorded watermark.
  let at = first == null ? target : Math.min(target, Number(first))
  do {
    const from = at
    at = Math.min(target, at + stepIds)
    await db.query('BEGIN ISOLATION LEVEL READ COMMITTED')
    try {
      deleted += Number((await db.query<{ n: string }>('SELECT event_prune($1, $2) AS n', [at, from])).rows[0]?.n ?? 0)
      await db.query('COMMIT')
    } catch (e) {
      await db.query('ROLLBACK').catch(() => {})
      throw e
    }
  } while (at < target)
  return deleted
}
