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
 * Exempts a session that is idle by design (a LISTEN connection, a lease, a held lock) from the
 * server's `idle_session_timeout` (PostgreSQL 14+; a no-op before): set on the database, it
 * would end such a session every few seconds. Not a startup option, which older servers refuse.
 */
export const keepIdleSession = async (client: pg.Client): Promise<void> => {
  await client.query("SELECT set_config(name, '0', false) FROM pg_settings WHERE name = 'idle_session_timeout'")
}
