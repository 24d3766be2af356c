/**
 * Ending node-postgres connections when the server may not answer. `client.end()` says goodbye
 * and waits for the server to close the socket, which a frozen server (or one behind a partition
 * that drops packets) never does, and a connect it interrupts never settles. Closing the socket
 * under the client fails whatever is in flight at once ("Connection terminated unexpectedly").
 */
import { within } from '@vitrage-persistor/core'
import pg from 'pg'

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

/**
 * Settings (an SQL select list) by which the server probes a silent session: one whose client is
 * gone behind a dead path ends within ~25 s (10 s idle, then 3 probes 5 s apart) instead of at the
 * OS's two-hour keepalive. The lease's startup options say the same (lease.ts). Ignored on a Unix
 * socket.
 */
export const PROBE_WHEN_SILENT = "set_config('tcp_keepalives_idle', '10', false), set_config('tcp_keepalives_interval', '5', false), set_config('tcp_keepalives_count', '3', false)"

/**
 * A select-list item by which the server ends a query whose client closed its connection within
 * ~5 s (client_connection_check_interval, PostgreSQL 14 and later; nothing on older servers, so
 * not a startup option). Without it a query waiting on a lock, left by a client that gave up on
 * it (a stop that would not wait for a locked event table, a close with a deadline), went on
 * holding its session and its place in the lock queue until the lock came free or the statement
 * timeout (review 59: a follower stopped during its first read; measured: the session gone 2 s
 * after the client closed with the setting, still waiting without).
 */
export const END_WHEN_CLIENT_GONE = "(SELECT set_config(name, '5000', false) FROM pg_settings WHERE name = 'client_connection_check_interval')"

/** Failure code of a query whose connection UnansweredQueryWatch dropped. */
export const UNANSWERED = 'query-unanswered'

/**
 * Drops the connection of a query that has heard nothing from its server for longer than
 * `limitMs`.
 *
 * The pool's statement_timeout bounds every statement on the server: a server that still hears
 * its client answers within it, with 57014 at worst. A query that has heard nothing for well
 * longer has lost its server: the host froze or died, or the path died under the connection (a
 * failover moved the address, a firewall or NAT forgot the flow). TCP notices only when it gives
 * up retransmitting (tcp_retries2, ~15 min on Linux) or, with nothing unacknowledged, not at all,
 * and every later append waits behind that one. Dropping the connection fails the query
 * (transient) and its retry opens a new connection. The retry is safe: an append whose commit
 * was lost is stored once (append.ts, the unique message_id).
 *
 * Silence, not age: a query is timed from the last bytes its connection received, so a streamed
 * read whose consumer is still working through rows the server sent long ago (the server done,
 * the rows in the socket buffers) is not taken for a lost server. One timer for all clients,
 * checking every `limitMs / 4` (at most 5 s); node-postgres does not say when a query was sent,
 * so a query is timed from the first check that sees it. A check that runs late (the event loop
 * was blocked) times everything afresh: a reply that arrived meanwhile is read only after the
 * timer's callback, so the silence it measured is not the server's.
 */
export class UnansweredQueryWatch {
  private readonly seen = new Map<pg.PoolClient, { readonly query: unknown; readonly bytes: number; readonly since: number }>()
  private readonly dropped = new WeakSet<pg.PoolClient>()
  private readonly timer: NodeJS.Timeout
  private readonly intervalMs: number
  private lastCheck: number | undefined

  constructor(
    private readonly limitMs: number,
    private readonly clients: () => Iterable<pg.PoolClient>,
    private readonly onDrop: (client: pg.PoolClient, ms: number) => void = () => {},
  ) {
    if (typeof (pg.Client.prototype as unknown as { _getActiveQuery?: unknown })._getActiveQuery !== 'function') {
      throw new Error('node-postgres no longer has Client._getActiveQuery: UnansweredQueryWatch needs another way to see a query in flight')
    }
    this.intervalMs = Math.max(50, Math.min(5_000, Math.floor(limitMs / 4)))
    this.timer = setInterval(() => this.check(), this.intervalMs)
    this.timer.unref()
  }

  /** Whether this watch dropped `client`'s connection (so its failure says why). */
  droppedIt(client: pg.PoolClient): boolean {
    return this.dropped.has(client)
  }

  check(now = performance.now()): void {
    const late = this.lastCheck !== undefined && now - this.lastCheck > 2 * this.intervalMs
    this.lastCheck = now
    const active = new Set<pg.PoolClient>()
    for (const client of this.clients()) {
      const query = activeQuery(client)
      if (query === undefined) continue
      active.add(client)
      const bytes = bytesRead(client)
      const seen = this.seen.get(client)
      if (late || seen === undefined || seen.query !== query || seen.bytes !== bytes) this.seen.set(client, { query, bytes, since: now })
      else if (now - seen.since > this.limitMs && !this.dropped.has(client)) {
        this.dropped.add(client)
        this.onDrop(client, Math.round(now - seen.since))
        dropConnection(client)
      }
    }
    for (const client of this.seen.keys()) if (!active.has(client)) this.seen.delete(client)
  }

  close(): void {
    clearInterval(this.timer)
    this.seen.clear()
  }
}

// The query node-postgres has sent and not yet seen finish (its public `activeQuery` getter is
// deprecated and warns).
const activeQuery = (client: pg.PoolClient): unknown => (client as unknown as { _getActiveQuery: () => unknown })._getActiveQuery() ?? undefined

// Bytes the connection's socket has received (TLS or not: the socket pg reads from).
const bytesRead = (client: pg.PoolClient): number => (client as unknown as { connection?: { stream?: { bytesRead?: number } } }).connection?.stream?.bytesRead ?? 0
