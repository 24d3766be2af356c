/**
 * A lease that at most one process holds at a time: a session-level advisory lock on a
 * connection of its own. PostgreSQL releases it when that connection ends, so a crashed holder
 * gives it up by itself, and a holder whose connection fails learns it has lost the lease
 * (`lost`) and must stop what the lease guards.
 *
 * Used where the broker cannot keep a second consumer off a queue: oslo's queue in
 * --compat-queue mode has no single-active-consumer, and RabbitMQ does not enforce an exclusive
 * consumer on a quorum queue.
 */
import type { Failure } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import pg from 'pg'
import { classifyPgError } from './classify.js'

export interface Lease {
  /** Resolves when the lease is lost (its connection failed or ended). */
  readonly lost: Promise<void>
  /** Gives the lease up. Idempotent. */
  readonly release: () => Promise<void>
}

/** Takes lease `name` if nobody holds it: the lease, or undefined when another session has it. */
export const tryLease = async (connectionString: string, name: string, scrub: (s: string) => string = (s) => s): Promise<E.Either<Failure, Lease | undefined>> => {
  const client = new pg.Client({ connectionString, application_name: `vitrage-persistor lease ${name}`.slice(0, 63), keepAlive: true, connectionTimeoutMillis: 5_000 })
  let markLost: () => void = () => {}
  const lost = new Promise<void>((r) => {
    markLost = r
  })
  client.on('error', () => markLost())
  client.on('end', () => markLost())
  try {
    await client.connect()
    const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(1986622578, hashtext($1)) AS ok', [`lease:${name}`])
    if (rows[0]?.ok !== true) {
      await client.end().catch(() => {})
      return E.right(undefined)
    }
  } catch (e) {
    await client.end().catch(() => {})
    return E.left(classifyPgError(e, scrub))
  }
  let released: Promise<void> | undefined
  return E.right({
    lost,
    release: () => {
      // Ending the session releases its locks.
      released ??= client.end().catch(() => {})
      return released
    },
  })
}
