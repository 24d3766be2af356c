import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { resolve, withDefaultUser } from './config.js'

t.test('flags win over the environment, which wins over defaults', async (t) => {
  const r = resolve(['prefetch', 'batchSize', 'topic'], { prefetch: '10' }, { PERSISTOR_PREFETCH: '20', PERSISTOR_BATCH_SIZE: '30' })
  t.same(r, E.right({ prefetch: 10, batchSize: 30, topic: 'vitrage_persistor' }))
})

t.test('switches take true/false words from the environment', async (t) => {
  t.same(resolve(['compatQueue'], {}, { PERSISTOR_COMPAT_QUEUE: 'yes' }), E.right({ compatQueue: true }))
  t.same(resolve(['compatQueue'], { compatQueue: true }, { PERSISTOR_COMPAT_QUEUE: 'false' }), E.right({ compatQueue: true }))
  t.same(resolve(['compatQueue'], {}, {}), E.right({ compatQueue: false }))
})

t.test('every bad value is reported at once, naming its flag or variable', async (t) => {
  const r = resolve(['prefetch', 'batchSize', 'amqpUrl', 'logLevel'], { prefetch: '0', amqpUrl: 'http://x' }, { PERSISTOR_BATCH_SIZE: 'many', LOG_LEVEL: 'loud' })
  t.ok(E.isLeft(r))
  if (E.isLeft(r)) {
    t.same(r.left, [
      '--prefetch: must be an integer from 1 to 65535, got "0"',
      'PERSISTOR_BATCH_SIZE (environment): must be an integer from 1 to 65535, got "many"',
      '--amqp-url: must be an amqp:// or amqps:// URL, got a http:// URL',
      'LOG_LEVEL (environment): must be one of fatal, error, warn, info, debug, trace, silent (any case; warning for warn), got "loud"',
    ])
  }
})

t.test('LOG_LEVEL is read in any case, with warning for warn (a name other programs share, in their spellings)', async (t) => {
  for (const [raw, level] of [['INFO', 'info'], ['Warning', 'warn'], [' debug ', 'debug'], ['WARN', 'warn']] as const) {
    t.same(resolve(['logLevel'], {}, { LOG_LEVEL: raw }), E.right({ logLevel: level }), raw)
  }
  t.same(resolve(['logLevel'], { logLevel: 'ERROR' }, {}), E.right({ logLevel: 'error' }), 'the flag too')
  t.match(resolve(['logLevel'], {}, { LOG_LEVEL: 'VERBOSE' }), E.left([/got "VERBOSE"/]))
})

t.test('an unparseable URL is reported without echoing it (it may hold a password)', async (t) => {
  const r = resolve(['databaseUrl'], { databaseUrl: 'postgres//u:hunter2@h' }, {})
  t.ok(E.isLeft(r))
  if (E.isLeft(r)) t.notMatch(r.left.join(), /hunter2/)
})

t.test('a database URL without a user gets the operating-system user, as libpq does', async (t) => {
  t.equal(withDefaultUser('postgres://localhost:5432/db', { USER: 'vitrage' }), 'postgres://vitrage@localhost:5432/db')
  t.equal(withDefaultUser('postgres://app@localhost/db', { USER: 'vitrage' }), 'postgres://app@localhost/db')
  t.equal(withDefaultUser('postgres://localhost/db', { PGUSER: 'x', USER: 'vitrage' }), 'postgres://localhost/db')
})

t.test('--http-host is an IP address or a host name, and --mirror-stream an EventStoreDB stream name', async (t) => {
  for (const ok of ['0.0.0.0', '::', '127.0.0.1', 'localhost', 'persistor-1.example.org']) t.same(resolve(['httpHost'], { httpHost: ok }, {}), E.right({ httpHost: ok }), ok)
  t.same(resolve(['httpHost'], { httpHost: 'not a host' }, {}), E.left(['--http-host: must be an IP address or a host name, got "not a host"']))
  t.same(resolve(['mirrorStream'], { mirrorStream: 'vitrage.events-1' }, {}), E.right({ mirrorStream: 'vitrage.events-1' }))
  for (const bad of ['', '$all', 'a b']) {
    t.same(resolve(['mirrorStream'], { mirrorStream: bad }, {}), E.left([`--mirror-stream: must be a non-empty EventStoreDB stream name without spaces, not starting with $ (system streams), got ${JSON.stringify(bad)}`]), JSON.stringify(bad))
  }
})

t.test('an environment variable set but empty counts as unset: the default, not an error; a flag still wins', async (t) => {
  t.same(resolve(['prefetch', 'historyProjection', 'compatQueue'], {}, { PERSISTOR_PREFETCH: '', PERSISTOR_HISTORY_PROJECTION: ' ', PERSISTOR_COMPAT_QUEUE: '' }), E.right({ prefetch: 2000, historyProjection: true, compatQueue: false }))
  t.same(resolve(['prefetch'], { prefetch: '10' }, { PERSISTOR_PREFETCH: '' }), E.right({ prefetch: 10 }))
  t.same(resolve(['historyProjection'], {}, { PERSISTOR_HISTORY_PROJECTION: 'maybe' }), E.left(['PERSISTOR_HISTORY_PROJECTION (environment): must be true or false (or 1/0, yes/no, on/off), got "maybe"']))
})

t.test('--mirror-url names a host', async (t) => {
  t.same(resolve(['mirrorUrl'], { mirrorUrl: 'esdb://es.example:2113?tls=false' }, {}), E.right({ mirrorUrl: 'esdb://es.example:2113?tls=false' }))
  t.same(resolve(['mirrorUrl'], { mirrorUrl: 'esdb://' }, {}), E.left(['--mirror-url: names no host: esdb://host:2113?tls=false (or esdb+discover://, kurrentdb://)']))
  t.same(resolve(['mirrorUrl'], { mirrorUrl: 'http://es:2113' }, {}), E.left(['--mirror-url: must be an esdb:// (or esdb+discover://, kurrentdb://) connection string']))
})
