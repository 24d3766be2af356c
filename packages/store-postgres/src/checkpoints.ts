/**
 * Checkpoints of the log's readers (projection_checkpoint, migration 0003): the last event id a
 * reader has fully processed. Moves are compare-and-set, so two instances of a reader cannot
 * both advance from the same position: the second gets CheckpointConflict and re-reads.
 */
import type pg from 'pg'

type Client = pg.PoolClient | pg.Client

/**
 * Thrown when the checkpoint moved under us: another instance is processing the same reader.
 * Its code classifies it as `rejected` (retrying the same page cannot succeed).
 */
export class CheckpointConflict extends Error {
  readonly code = 'checkpoint-conflict'
  constructor(name: string, expected: number) {
    super(`checkpoint ${name} is no longer at ${expected}: another instance is processing this reader`)
    this.name = 'CheckpointConflict'
  }
}

/**
 * Checkpoint `name`, registered at 0 if it does not exist yet: retention (event_prune) waits for
 * every registered checkpoint, so a reader that has not yet copied anything (a mirror whose
 * server is unreachable) holds prune back from the start instead of after its first success.
 */
export const registerCheckpoint = async (db: Client | pg.Pool, name: string): Promise<number> => {
  await db.query('INSERT INTO projection_checkpoint (name, position) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING', [name])
  return readCheckpoint(db, name)
}

export const readCheckpoint = async (db: Client | pg.Pool, name: string): Promise<number> =>
  Number((await db.query<{ position: string }>('SELECT position FROM projection_checkpoint WHERE name = $1', [name])).rows[0]?.position ?? 0)

/**
 * Moves checkpoint `name` from `expected` to `position` (in the caller's transaction, if any);
 * throws CheckpointConflict when it is no longer at `expected`.
 *
 * `withinLog`: never past the newest stored event (CheckpointPastHead). A reader that read events
 * and then moves its checkpoint over them, after the database was restored to before them
 * meanwhile, would otherwise carry its old position into the restored log (the compare-and-set
 * passes when the restore left the checkpoint where the reader last saw it) and skip the events
 * that take those ids next: the mirror, whose moves follow EventStoreDB's acknowledgements, not
 * its reads. (The history projection's moves share a transaction with its rows and have their
 * own restore check.)
 */
export const moveCheckpoint = async (client: Client | pg.Pool, name: string, expected: number, position: number, withinLog = false): Promise<void> => {
  const guard = withinLog ? 'AND $2::bigint <= coalesce((SELECT max(id) FROM event), 0)' : ''
  const moved =
    expected === 0
      ? await client.query(
          `INSERT INTO projection_checkpoint (name, position) SELECT $1, $2 WHERE true ${guard}
           ON CONFLICT (name) DO UPDATE SET position = $2, updated_at = now() WHERE projection_checkpoint.position = 0`,
          [name, position],
        )
      : await client.query(`UPDATE projection_checkpoint SET position = $2, updated_at = now() WHERE name = $1 AND position = $3 ${guard}`, [name, position, expected])
  // Inserted (first move) or updated from `expected`: 1 row. Anything else: the log ends before
  // `position`, or someone else moved it.
  if (moved.rowCount !== 1 && withinLog) {
    const head = Number((await client.query<{ head: string }>('SELECT coalesce(max(id), 0) AS head FROM event')).rows[0]?.head ?? 0)
    if (position > head) throw new CheckpointPastHead(name, position, head)
  }
  if (moved.rowCount !== 1) throw new CheckpointConflict(name, expected)
}

/** A move past the newest stored event: the log lost events the reader had read (a restore, a failover). */
export class CheckpointPastHead extends Error {
  readonly code = 'checkpoint-past-head'
  constructor(name: string, position: number, head: number) {
    super(`checkpoint ${name} cannot move to ${position}: the newest stored event is ${head} (the database was restored or failed over under its reader?)`)
    this.name = 'CheckpointPastHead'
  }
}

/**
 * Raises checkpoint `name` to checkpoint `floor` (creating it there when absent) and returns it:
 * where a partition of `floor`'s reader resumes (runner.ts). Never lowers it. Moves of the
 * partition's checkpoint are then plain compare-and-set (moveCheckpoint): a checkpoint deleted
 * meanwhile (a rebuild) makes the next move fail, and the partition resumes from here again.
 */
export const raiseCheckpoint = async (client: Client | pg.Pool, name: string, floor: string): Promise<number> => {
  const { rows } = await client.query<{ position: string }>(
    `INSERT INTO projection_checkpoint (name, position)
     SELECT $1, coalesce((SELECT position FROM projection_checkpoint WHERE name = $2), 0)
     ON CONFLICT (name) DO UPDATE SET position = greatest(projection_checkpoint.position, EXCLUDED.position), updated_at = now()
     RETURNING position`,
    [name, floor],
  )
  return Number(rows[0]?.position ?? 0)
}

/** SQL: the row is a partition checkpoint of checkpoint $1 (core's partitionCheckpoint), of any count. */
export const PARTITION_OF = `left(name, length($1) + 1) = $1 || '/'`

/**
 * Advances checkpoint `name` to the lowest of its partitions' checkpoints (`partitions`; an absent
 * one counts as `name`'s; none: it stays), never backwards, and deletes the partition checkpoints
 * (of any partition count) that it has reached: they say nothing more, and `prune` would wait for
 * them. One statement, which writes nothing when there is nothing to change (every runner calls it
 * after catching up). Returns the checkpoint as it computed it (another runner may have moved it
 * further since).
 */
export const settlePartitionCheckpoints = async (client: Client | pg.Pool, name: string, partitions: readonly string[]): Promise<number> => {
  const { rows } = await client.query<{ position: string }>(
    `WITH common AS (SELECT coalesce((SELECT position FROM projection_checkpoint WHERE name = $1), 0) AS position),
          lowest AS (SELECT min(greatest(coalesce(c.position, 0), common.position)) AS position
                     FROM unnest($2::text[]) AS p(name) LEFT JOIN projection_checkpoint c USING (name), common),
          settled AS (SELECT greatest(common.position, lowest.position) AS position FROM common, lowest),
          moved AS (
            INSERT INTO projection_checkpoint (name, position) SELECT $1, position FROM settled
            ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()
              WHERE projection_checkpoint.position < EXCLUDED.position),
          dropped AS (DELETE FROM projection_checkpoint WHERE ${PARTITION_OF} AND position <= (SELECT position FROM settled))
     SELECT position FROM settled`,
    [name, partitions],
  )
  return Number(rows[0]?.position ?? 0)
}

export interface CheckpointInfo {
  readonly name: string
  readonly position: number
  /** When it was registered or last moved (ISO). */
  readonly updatedAt: string
}

/** Every registered checkpoint: retention waits for the slowest (event_prune). */
export const listCheckpoints = async (db: Client | pg.Pool): Promise<CheckpointInfo[]> =>
  (
    await db.query<{ name: string; position: string; updated_at: Date }>('SELECT name, position, updated_at FROM projection_checkpoint ORDER BY position, name')
  ).rows.map((r) => ({ name: r.name, position: Number(r.position), updatedAt: r.updated_at.toISOString() }))

/** What `setCheckpoint` did: moved it (from where), found no such checkpoint, or refused. */
export type SetCheckpointResult = { readonly from: number } | { readonly missing: true } | { readonly prunedBelow: number }

/**
 * The lock event_prune holds while it reads the checkpoints and deletes (migration 0009), taken
 * shared by whoever moves a checkpoint back within a transaction at READ COMMITTED (so that its
 * next statement sees a prune that committed meanwhile), then checks the watermark.
 */
export const RETENTION_LOCK_SHARED = "pg_advisory_xact_lock_shared(1986622578, hashtext('event_retention'))"

/**
 * Puts checkpoint `name` at `position` (an operator's move: its reader should be stopped, or it
 * conflicts with it and re-reads); nothing is created. Refused when events after `position`
 * were pruned (its reader would skip them), checked under the advisory lock event_prune holds
 * (migration 0009; shared here): a prune running meanwhile either finishes first, and the check
 * sees its watermark, or waits and then counts this checkpoint. Its own transaction, at READ
 * COMMITTED whatever the database's default: the lock is taken before the statement that reads
 * the watermark, so that statement's snapshot sees the prune's (at REPEATABLE READ the snapshot
 * would be the lock statement's, taken before the wait).
 */
export const setCheckpoint = async (db: Client, name: string, position: number): Promise<SetCheckpointResult> => {
  await db.query('BEGIN ISOLATION LEVEL READ COMMITTED')
  try {
    await db.query(`SELECT ${RETENTION_LOCK_SHARED}`)
    const { rows } = await db.query<{ moved: string | null; found: boolean; pruned_below: string }>(
      `WITH old AS (SELECT position FROM projection_checkpoint WHERE name = $1 FOR UPDATE),
            moved AS (
              UPDATE projection_checkpoint c SET position = $2, updated_at = now()
              FROM old
              WHERE c.name = $1 AND $2 + 1 >= (SELECT pruned_below FROM event_retention)
              RETURNING old.position AS old)
       SELECT (SELECT old FROM moved) AS moved, EXISTS (SELECT 1 FROM old) AS found, (SELECT pruned_below FROM event_retention) AS pruned_below`,
      [name, position],
    )
    await db.query('COMMIT')
    const row = rows[0]
    if (row === undefined || !row.found) return { missing: true }
    return row.moved === null ? { prunedBelow: Number(row.pruned_below) } : { from: Number(row.moved) }
  } catch (e) {
    await db.query('ROLLBACK').catch(() => {})
    throw e
  }
}

/** Removes checkpoint `name` (retention stops waiting for it); returns where it was, or undefined. */
export const removeCheckpoint = async (db: Client | pg.Pool, name: string): Promise<number | undefined> => {
  const { rows } = await db.query<{ position: string }>('DELETE FROM projection_checkpoint WHERE name = $1 RETURNING position', [name])
  return rows[0] === undefined ? undefined : Number(rows[0].position)
}
