/**
 * Wake-ups on append: one connection LISTENing on `vitrage_persistor_event` (migration 0003's
 * statement trigger notifies once per committed batch).
 *
 * States: connecting -> listening -> (connection lost) -> waiting (backoff) -> connecting ...;
 * close() from any state -> closed. Every transition into `listening` also wakes the listener,
 * because appends committed while it was not listening sent notifications nobody received.
 */
import { backoffDelay, type BackoffPolicy, type Logger, silentLogger } from '@vitrage-persistor/core'
import pg from 'pg'

export const APPEND_CHANNEL = 'vitrage_persistor_event'

export interface AppendListenerOptions {
  readonly connectionString: string
  readonly reconnect?: BackoffPolicy
  readonly logger?: Logger
}

export const listenForAppends = (options: AppendListenerOptions, listener: () => void): { close: () => Promise<void> } => {
  const log = options.logger ?? silentLogger
  const policy = options.reconnect ?? { initialMs: 200, maxMs: 10_000 }
  let client: pg.Client | undefined
  let closed = false
  let attempt = 0
  let timer: NodeJS.Timeout | undefined

  const connect = async (): Promise<void> => {
    if (closed) return
    const c = new pg.Client({ connectionString: options.connectionString, application_name: 'vitrage-persistor follow', keepAlive: true, connectionTimeoutMillis: 10_000 })
    c.on('error', (e) => {
      log.warn({ err: e.message }, 'append listener connection lost')
      retry(c)
    })
    c.on('notification', (n) => {
      if (n.channel === APPEND_CHANNEL) listener()
    })
    try {
      await c.connect()
      await c.query(`LISTEN ${APPEND_CHANNEL}`)
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'append listener cannot connect; retrying')
      retry(c)
      return
    }
    if (closed) {
      await c.end().catch(() => {})
      return
    }
    client = c
    attempt = 0
    listener()
  }

  const retry = (c: pg.Client): void => {
    void c.end().catch(() => {})
    if (client === c) client = undefined
    if (closed || timer !== undefined) return
    timer = setTimeout(() => {
      timer = undefined
      void connect()
    }, backoffDelay(policy, attempt++))
  }

  void connect()
  let closing: Promise<void> | undefined
  return {
    close: () => {
      closing ??= (async () => {
        closed = true
        clearTimeout(timer)
        await client?.end().catch(() => {})
      })()
      return closing
    },
  }
}
