/**
 * Wake-ups on append: one connection LISTENing on `vitrage_persistor_event` (migration 0003's
 * statement trigger notifies once per committed batch).
 *
 * States: connecting -> listening -> (connection lost, or a check unanswered) -> waiting (backoff)
 * -> connecting ...; close() from any state -> closed. Every transition into `listening` also
 * wakes the listener, because appends committed while it was not listening sent notifications
 * nobody received.
 *
 * A LISTEN connection only reads, so a half-dead one (server frozen, host gone, a partition
 * that drops packets) would go unnoticed until the OS keepalive gives up (two hours), its
 * wake-ups lost: it is checked every CHECK_MS, and one that does not answer is dropped and
 * opened again. Closing never waits on the server for more than END_MS.
 */
import { backoffDelay, type BackoffPolicy, type Logger, silentLogger } from '@vitrage-persistor/core'
import pg from 'pg'
import { dropConnection, endWithin, keepIdleSession } from './connection.js'

export const APPEND_CHANNEL = 'vitrage_persistor_event'

/** How often the LISTEN connection is checked; a check unanswered this long drops it. */
const CHECK_MS = 15_000
/** How long ending a connection waits for the server's goodbye. */
const END_MS = 2_000

export interface AppendListenerOptions {
  readonly connectionString: string
  /** The session's application_name (default 'vitrage-persistor listen'). */
  readonly applicationName?: string
  readonly reconnect?: BackoffPolicy
  readonly logger?: Logger
}

export interface AppendListener {
  /** Ends the connection (waiting at most END_MS for the server). Idempotent. */
  readonly close: () => Promise<void>
  /** Closes its socket at once, without a goodbye (a close past its deadline). */
  readonly drop: () => void
}

export const listenForAppends = (options: AppendListenerOptions, listener: () => void): AppendListener => {
  const log = options.logger ?? silentLogger
  const policy = options.reconnect ?? { initialMs: 200, maxMs: 10_000 }
  let client: pg.Client | undefined
  // The client being connected: close() drops it (a connect to a frozen server waits out its timeout).
  let opening: pg.Client | undefined
  let closed = false
  let attempt = 0
  let timer: NodeJS.Timeout | undefined

  const connect = async (): Promise<void> => {
    if (closed) return
    const c = new pg.Client({
      connectionString: options.connectionString,
      application_name: (options.applicationName ?? 'vitrage-persistor listen').slice(0, 63),
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      connectionTimeoutMillis: 10_000,
      query_timeout: CHECK_MS,
    })
    c.on('error', (e) => {
      // Closing drops the connection: not news. A check that failed already said why.
      if (closed || (c !== client && c !== opening)) return
      log.warn({ err: e.message }, 'append listener connection lost')
      retry(c)
    })
    c.on('notification', (n) => {
      if (n.channel === APPEND_CHANNEL && !closed) listener()
    })
    opening = c
    try {
      await c.connect()
      await keepIdleSession(c)
      await c.query(`LISTEN ${APPEND_CHANNEL}`)
    } catch (e) {
      if (!closed) log.warn({ err: (e as Error).message }, 'append listener cannot connect; retrying')
      retry(c)
      return
    } finally {
      if (opening === c) opening = undefined
    }
    if (closed) {
      await endWithin(c, END_MS)
      return
    }
    client = c
    attempt = 0
    listener()
  }

  const retry = (c: pg.Client): void => {
    // A query that timed out leaves the connection mid-exchange: it is dropped, not ended.
    dropConnection(c)
    if (client === c) client = undefined
    if (closed || timer !== undefined) return
    timer = setTimeout(() => {
      timer = undefined
      void connect()
    }, backoffDelay(policy, attempt++))
  }

  const check = setInterval(() => {
    const c = client
    if (c === undefined) return
    c.query('SELECT 1').catch((e: unknown) => {
      if (closed || client !== c) return
      log.warn({ err: (e as Error).message }, 'append listener connection does not answer; reconnecting')
      retry(c)
    })
  }, CHECK_MS)
  check.unref()

  void connect()
  let closing: Promise<void> | undefined
  const stop = (): void => {
    closed = true
    clearTimeout(timer)
    clearInterval(check)
    if (opening !== undefined) dropConnection(opening)
  }
  return {
    close: () => {
      closing ??= (async () => {
        stop()
        if (client !== undefined) await endWithin(client, END_MS)
      })()
      return closing
    },
    drop: () => {
      stop()
      if (client !== undefined) dropConnection(client)
    },
  }
}
