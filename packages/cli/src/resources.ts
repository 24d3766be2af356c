/**
 * Resources commands share, each with one owner: the command that opens it closes it.
 */
import { type Failure, type Logger, makeScrubber, redactUrl, secretsOf } from '@vitrage-persistor/core'
import { PgEventStore } from '@vitrage-persistor/store-postgres'
import * as E from 'fp-ts/lib/Either.js'
import type * as TE from 'fp-ts/lib/TaskEither.js'
import type { Io } from './command.js'
import { createLogger } from './logger.js'

export interface StoreHandle {
  readonly store: PgEventStore
  readonly scrub: (text: string) => string
}

/**
 * How long a long-running command's endpoints and shutdown wait on the database (a frozen one
 * never answers): past it, a readiness probe answers and a close cuts off what still runs.
 */
export const DATABASE_WAIT_MS = 2_000

/** Opens the event store for a short-lived command (queries, one-off projections). */
export const openStore = (databaseUrl: string, applicationName: string, maxConnections = 2): StoreHandle => {
  const scrub = makeScrubber(secretsOf([databaseUrl]))
  return { store: new PgEventStore({ connectionString: databaseUrl, maxConnections, applicationName, scrub }), scrub }
}

/**
 * Opens the event store for a long-running command, with its logger, which the store logs its
 * own warnings to (a connection dropped, a listener lost).
 */
export const openLoggedStore = (databaseUrl: string, applicationName: string, maxConnections: number, logLevel: string): StoreHandle & { readonly log: Logger } => {
  const scrub = makeScrubber(secretsOf([databaseUrl]))
  const log = createLogger(logLevel, scrub)
  return { store: new PgEventStore({ connectionString: databaseUrl, maxConnections, applicationName, scrub, logger: log }), scrub, log }
}

/**
 * Runs a TaskEither; on failure prints `what: reason` (URL redacted) and returns undefined (so the
 * task must not succeed with undefined: map a void result to a value).
 */
export const orReport = async <T>(io: Io, command: string, databaseUrl: string, task: TE.TaskEither<Failure, T>): Promise<T | undefined> => {
  const r = await task()
  if (E.isRight(r)) return r.right
  io.err(`vitrage-persistor ${command}: ${redactUrl(databaseUrl)}: ${r.left.message}${r.left.code ? ` (${r.left.code})` : ''}\n`)
  return undefined
}

/**
 * For commands that run until stopped: true (and the reason printed) when the database fails in
 * a way retrying cannot fix (no such database, credentials refused, no schema), so they end at
 * once as `run` does; a database not up yet (transient) is left to their own retries. Call it
 * once listening: an event table locked (VACUUM FULL, a migration) or a server that accepts and
 * never answers holds this read for as long as that lasts (up to the statement timeout), which
 * kept the health endpoints down and a SIGTERM unheard (review 57: 60 s). `stopped` (the
 * command's stop) ends the wait at once, as a pass. The answer itself is awaited however long it
 * takes (review 59: given up on after 2 s, a slow server's "no such database" was retried for ever).
 */
export const unrecoverableDatabase = async (io: Io, command: string, databaseUrl: string, store: Pick<PgEventStore, 'headId'>, stopped?: Promise<unknown>): Promise<boolean> => {
  const pass = E.right(0)
  const r = await Promise.race([store.headId()(), ...(stopped ? [stopped.then(() => pass)] : [])])
  if (E.isRight(r) || r.left.kind === 'transient') return false
  io.err(`vitrage-persistor ${command}: ${redactUrl(databaseUrl)}: ${r.left.message}${r.left.code ? ` (${r.left.code})` : ''}\n`)
  return true
}
