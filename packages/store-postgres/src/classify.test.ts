import t from 'tap'
import { classifyPgError } from './classify.js'

const pgError = (code: string, message: string): Error => Object.assign(new Error(message), { code })

t.test('driver errors are classified once: transient, rejected or fatal', async (t) => {
  t.equal(classifyPgError(pgError('57P01', 'terminating connection due to administrator command')).kind, 'transient')
  t.equal(classifyPgError(pgError('08006', 'connection failure')).kind, 'transient')
  t.equal(classifyPgError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })).kind, 'transient')
  t.equal(classifyPgError(Object.assign(new Error('connect EMFILE 127.0.0.1:5432 - Local (undefined:undefined)'), { code: 'EMFILE' })).kind, 'transient', 'out of file descriptors for a moment')
  // pg.Client's connectionTimeoutMillis against a server that accepts and never answers.
  t.equal(classifyPgError(new Error('timeout expired')).kind, 'transient')
  // A server in recovery, or made read-only: a new connection may reach one that writes.
  t.equal(classifyPgError(pgError('25006', 'cannot execute INSERT in a read-only transaction')).kind, 'transient')
  // A database closed for a while (ALTER DATABASE ... ALLOW_CONNECTIONS false); our own 55000
  // (prune without a snapshot) is not something waiting fixes.
  t.equal(classifyPgError(pgError('55000', 'database "vitrage" is not currently accepting connections')).kind, 'transient')
  t.equal(classifyPgError(pgError('55000', 'no graph snapshot: nothing may be pruned')).kind, 'fatal')
  // The same under lc_messages = 'de_DE': the reporting function (CheckMyDatabase, postinit.c;
  // ours is exec_stmt_raise) is not translated.
  const closedDe = Object.assign(pgError('55000', 'Datenbank »vitrage« akzeptiert gegenwärtig keine Verbindungen'), { routine: 'CheckMyDatabase' })
  t.equal(classifyPgError(closedDe).kind, 'transient')
  t.equal(classifyPgError(Object.assign(pgError('55000', 'keine Graph-Momentaufnahme'), { routine: 'exec_stmt_raise' })).kind, 'fatal')
  t.equal(classifyPgError(pgError('22P02', 'invalid input syntax for type json')).kind, 'rejected')
  t.equal(classifyPgError(pgError('23505', 'duplicate key value')).kind, 'rejected')
  t.equal(classifyPgError(pgError('28P01', 'password authentication failed for user "x"')).kind, 'fatal')
})

t.test('a missing table or function says how to fix it', async (t) => {
  const f = classifyPgError(pgError('42P01', 'relation "event" does not exist'))
  t.equal(f.kind, 'fatal')
  t.equal(f.message, 'relation "event" does not exist (is the schema migrated? vitrage-persistor migrate; may this role use schema public?)')
  t.match(classifyPgError(pgError('42883', 'function event_page(bigint) does not exist')).message, /vitrage-persistor migrate/)
  t.notMatch(classifyPgError(pgError('42501', 'permission denied for table event')).message, /migrate/)
})

t.test('secrets are scrubbed from the message', async (t) => {
  const f = classifyPgError(pgError('28P01', 'password authentication failed: s3cret'), (s) => s.replaceAll('s3cret', '***'))
  t.equal(f.message, 'password authentication failed: ***')
})
