/**
 * node-postgres errors, classified once (see core's Failure). SQLSTATE classes:
 * https://www.postgresql.org/docs/current/errcodes-appendix.html
 */
import { type Failure, failure } from '@vitrage-persistor/core'

// Errors without a SQLSTATE come from the socket or from pg itself.
// EMFILE/ENFILE/ENOBUFS: this process or host out of descriptors or buffers for a moment (a flood
// of sockets on the HTTP port, review 62): a connect later may pass.
const TRANSIENT_ERRNO = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND', 'EMFILE', 'ENFILE', 'ENOBUFS'])
// `timeout expired`: a pg.Client's connectionTimeoutMillis (a server that accepts and never answers).
const TRANSIENT_MESSAGE = /Connection terminated|connection error|timeout exceeded when trying to connect|timeout expired|Client was closed|not queryable|Query read timeout|terminating connection/i

const TRANSIENT_SQLSTATE = new Set([
  // read_only_sql_transaction: a server in recovery (a failover left this address on a standby)
  // or one made read-only (disk-full protection). The session stays read-only: transient, so
  // its connection is dropped and the retry opens a new one, which reaches the primary once the
  // address does.
  '25006',
  '25P03', // idle_in_transaction_session_timeout ended the session
  '57P05', // idle_session_timeout ended the session
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
  '57014', // query_canceled (statement_timeout): the same batch may pass when the server is less busy
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, recovering)
  '58000', // system_error
  '58030', // io_error
  'XX000', // internal_error: treated as transient; the batch is retried, never acked
])

export const classifyPgError = (error: unknown, scrub: (s: string) => string = (s) => s): Failure => {
  const e = error as { code?: unknown; message?: unknown; routine?: unknown }
  const code = typeof e?.code === 'string' ? e.code : undefined
  const message = scrub(typeof e?.message === 'string' ? e.message : String(error)).replace(/\s+/g, ' ')
  if (code === 'checkpoint-conflict') return failure('rejected', message, code)
  // The log lost what the reader read (a restore under it): it re-reads from the log as it is now.
  if (code === 'checkpoint-past-head') return failure('transient', message, code)
  if (code !== undefined && /^[0-9A-Z]{5}$/.test(code)) {
    const cls = code.slice(0, 2)
    if (TRANSIENT_SQLSTATE.has(code) || cls === '08' || cls === '53') return failure('transient', message, code)
    // 55000 is also ours ("no graph snapshot of this log: nothing may be pruned"), which waiting cannot fix;
    // at connect it is an operator closing the database for a while (ALTER DATABASE ...
    // ALLOW_CONNECTIONS false, as maintenance or a restore does). Told apart by the server
    // function that reported it (the R field, never translated, unlike the message under a
    // non-English lc_messages); by the English text when a proxy left the field out.
    if (code === '55000' && (e.routine === 'CheckMyDatabase' || /is not currently accepting connections/.test(message))) return failure('transient', message, code)
    // Data exceptions, integrity violations, program limits (nesting depth, value too large):
    // this input will never be accepted.
    if (cls === '22' || cls === '23' || cls === '54') return failure('rejected', message, code)
    // Authentication, missing objects, permissions, syntax: an operator must act. A missing
    // table or function of ours means the schema is behind: say what fixes it.
    if (code === '42P01' || code === '42883') return failure('fatal', `${message} (is the schema migrated? vitrage-persistor migrate; may this role use schema public?)`, code)
    return failure('fatal', message, code)
  }
  if ((code !== undefined && TRANSIENT_ERRNO.has(code)) || TRANSIENT_MESSAGE.test(message)) {
    return failure('transient', message, code)
  }
  return failure('fatal', message, code)
}

/**
 * Why `url` is not a PostgreSQL URL (postgres://, postgresql:// or socket:), or undefined. pg
 * takes any text and fails later as an unreachable host ("getaddrinfo ENOTFOUND base" for
 * "not a url"), which reads as an outage and is retried; this is configuration. The text is
 * never echoed: it may hold a password.
 */
export const databaseUrlProblem = (url: string): string | undefined => {
  // pg's own socket form (postgres://user@/db?host=/var/run/postgresql) is no WHATWG URL.
  if (/^(postgres|postgresql|socket):\/\//i.test(url)) return undefined
  let protocol: string
  try {
    protocol = new URL(url).protocol
  } catch {
    return 'the database URL is not a URL (postgres://user@host:5432/database)'
  }
  return ['postgres:', 'postgresql:', 'socket:'].includes(protocol) ? undefined : `the database URL must be postgres:// or postgresql://, got a ${protocol}// URL`
}
