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

export const readCheckpoint = async (db: Client | pg.Pool, name: string): Promise<number> =>
  Number((await db.query<{ position: string }>('SELECT position FROM projection_checkpoint WHERE name = $1', [name])).rows[0]?.position ?? 0)

/**
 * Moves checkpoint `name` from `expected` to `position` (in the caller's transaction, if any);
 * throws CheckpointConflict when it is no longer at `expected`.
 */
export const moveCheckpoint = async (client: Client | pg.Pool, name: string, expected: number, position: number): Promise<void> => {
  const moved =
    expected === 0
      ? await client.query(
          `INSERT INTO projection_checkpoint (name, position) VALUES ($1, $2)
           ON CONFLICT (name) DO UPDATE SET position = $2, updated_at = now() WHERE projection_checkpoint.position = 0`,
          [name, position],
        )
      : await client.query('UPDATE projection_checkpoint SET position = $3, updated_at = now() WHERE name = $1 AND position = $2', [name, expected, position])
  // Inserted (first move) or updated from `expected`: 1 row. Anything else, someone else moved it.
  if (moved.rowCount !== 1) throw new CheckpointConflict(name, expected)
}
