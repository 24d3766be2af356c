/**
 * Ending node-postgres connections when the server may not answer. `client.end()` says goodbye
 * and waits for the server to close the socket, which a frozen server (or one behind a partition
 * that drops packets) never does, and a connect it interrupts never settles. Closing the socket
 * under the client fails whatever is in flight at once ("Connection terminated unexpectedly").
 */
import { within } from '@vitrage-persistor/core'
import type pg from 'pg'

/** Closes the client's socket (no goodbye); what is in flight fails at once. */
export const dropConnection = (client: pg.Client | pg.PoolClient): void =>
  (client as unknown as { connection?: { stream?: { destroy?: () => void } } }).connection?.stream?.destroy?.()

/** client.end(), or the socket dropped if the server has not answered within `ms`. */
export const endWithin = async (client: pg.Client, ms: number): Promise<void> => {
  const ended = await within(
    client.end().then(
      () => true,
      () => true,
    ),
    ms,
    false,
  )
  if (!ended) dropConnection(client)
}

/**
 * The startup `options` of every session. `search_path` is pinned to `public`, where `migrate`
 * creates the schema, so that a role's or database's search_path can neither send appends to
 * another schema's `event` table (they would be acked, and missing from the log) nor make the
 * schema unreachable; `DateStyle` to ISO, the only output node-postgres parses timestamps from.
 * A URL's own `options` parameter (`?options=-c%20search_path%3Dvp`) comes after them, so it
 * wins (pg would otherwise drop it for ours); `extra` last.
 */
export const sessionOptions = (connectionString: string, extra?: string): string => {
  let own: string | null = null
  try {
    own = new URL(connectionString).searchParams.get('options')
  } catch {
    // Not a WHATWG URL (pg's socket forms): nothing of the operator's to keep.
  }
  return ['-c search_path=public -c DateStyle=ISO', own, extra].filter((o) => o !== undefined && o !== null && o !== '').join(' ')
}

/**
 * Exempts a session that is idle by design (a LISTEN connection, a lease, a held lock) from the
 * server's `idle_session_timeout` (PostgreSQL 14+; a no-op before): set on the database, it
 * would end such a session every few seconds. Not a startup option, which older servers refuse.
 */
export const keepIdleSession = async (client: pg.Client): Promise<void> => {
  await client.query("SELECT set_config(name, '0', false) FROM pg_settings WHERE name = 'idle_session_timeout'")
}
