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
import { dropConnection, endWithin, keepIdleSession } from './connection.js'

export interface Lease {
  /** Resolves when the lease is lost (its connection failed or ended). */
  readonly lost: Promise<void>
  /** Gives the lease up. Idempotent. */
  readonly release: () => Promise<void>
}

/** How often the holder checks its lease connection; a check that takes longer than this fails it. */
const CHECK_MS = 5_000

/**
 * Takes lease `name` if nobody holds it: the lease, or undefined when another session has it.
 *
 * A holder whose host or network dies must not keep the lease for the OS's two-hour TCP keepalive:
 * the server probes the connection after 10 s of silence (every 5 s, 3 times), and the holder
 * runs a check every CHECK_MS, so each side learns within about half a minute.
 */
export const tryLease = async (connectionString: string, name: string, scrub: (s: string) => string = (s) => s): Promise<E.Either<Failure, Lease | undefined>> => {
  const client = new pg.Client({
    connectionString,
    application_name: `vitrage-persistor lease ${name}`.slice(0, 63),
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    connectionTimeoutMillis: 5_000,
    query_timeout: CHECK_MS,
    options: '-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3',
  })
  let markLost: () => void = () => {}
  const lost = new Promise<void>((r) => {
    markLost = r
  })
  const drop = (): void => {
    markLost()
    dropConnection(client)
  }
  client.on('error', drop)
  client.on('end', () => markLost())
  try {
    await client.connect()
    await keepIdleSession(client)
    const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(1986622578, hashtext($1)) AS ok', [`lease:${name}`])
    if (rows[0]?.ok !== true) {
      await endWithin(client, 2_000)
      return E.right(undefined)
    }
  } catch (e) {
    await endWithin(client, 2_000)
    return E.left(classifyPgError(e, scrub))
  }
  const check = setInterval(() => void client.query('SELECT 1').catch(drop), CHECK_MS)
  check.unref()
  void lost.then(() => clearInterval(check))
  let released: Promise<void> | undefined
  return E.right({
    lost,
    release: () => {
      clearInterval(check)
      // Ending the session releases its locks; a server that does not answer is not waited for.
      released ??= endWithin(client, 2_000)
      return released
    },
  })
}
