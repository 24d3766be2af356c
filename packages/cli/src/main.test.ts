import t from 'tap'
import { main } from './main.js'

const run = async (args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> => {
  let out = ''
  let err = ''
  const code = await main(['node', 'vitrage-persistor', ...args], env, { out: (s) => void (out += s), err: (s) => void (err += s), isTTY: false })
  return { code, out, err }
}

t.test('a bad flag value prints what is wrong and exits 2 before connecting anywhere', async (t) => {
  const r = await run(['run', '--prefetch', 'lots', '--amqp-url', 'amqp://u:s3cret@127.0.0.1:1/'])
  t.equal(r.code, 2)
  t.match(r.err, /--prefetch: must be an integer from 1 to 65535, got "lots"/)
  t.notMatch(r.err + r.out, /s3cret/)
})

t.test('a switch the environment turns on is turned off by its --no- flag (the flag wins)', async (t) => {
  // The environment's value is not even read when the flag is given: no error about it.
  const r = await run(['run', '--no-compat-queue', '--no-amqp-durable-queues', '--prefetch', 'lots'], { PERSISTOR_COMPAT_QUEUE: 'garbage', PERSISTOR_AMQP_DURABLE_QUEUES: 'garbage' })
  t.equal(r.code, 2)
  t.notMatch(r.err, /PERSISTOR_COMPAT_QUEUE|PERSISTOR_AMQP_DURABLE_QUEUES/)
  const env = await run(['run', '--prefetch', 'lots'], { PERSISTOR_COMPAT_QUEUE: 'garbage' })
  t.match(env.err, /PERSISTOR_COMPAT_QUEUE \(environment\): must be true or false/, 'without the flag it is')
})

t.test('a queue or topic name whose derived names would pass 255 bytes is refused before starting', async (t) => {
  const r = await run(['run', '--queue', 'q'.repeat(253), '--topic', 't'.repeat(251), '--prefetch', 'lots'])
  t.equal(r.code, 2)
  t.match(r.err, /--queue: must be a non-empty AMQP name without spaces of at most 250 bytes \(\.dead is appended to it\)/)
  t.match(r.err, /--topic: must be a non-empty AMQP name without spaces of at most 250 bytes \(\.info is appended to it\)/)
})

t.test('quorum queues that are auto-delete, which RabbitMQ refuses, are a configuration error, exit 2, before connecting anywhere', async (t) => {
  // Before: run retried its topology for ever, having declared oslo's exchange meanwhile.
  const r = await run(['run', '--amqp-quorum-queues', '--amqp-auto-delete', '--amqp-url', 'amqp://u:s3cret@127.0.0.1:1/'])
  t.equal(r.code, 2)
  t.match(r.err, /--amqp-quorum-queues with --amqp-auto-delete: RabbitMQ refuses auto-delete quorum queues/)
  t.notMatch(r.err + r.out, /s3cret/)
})

t.test('a database URL that names no database is a configuration error, exit 2', async (t) => {
  const r = await run(['migrate', '--database-url', 'postgres://u:s3cret@127.0.0.1:5432/'])
  t.equal(r.code, 2)
  t.match(r.err, /--database-url: names no database/)
  t.notMatch(r.err, /s3cret/)
})

t.test('an unknown flag is a usage error', async (t) => {
  const r = await run(['run', '--prefetchh', '5'])
  t.equal(r.code, 2)
  t.match(r.err, /unknown option '--prefetchh'/)
})

t.test('project history --derive takes in-database or in-node only; --partitions only in the database', async (t) => {
  const r = await run(['project', 'history', '--derive', 'sideways', '--database-url', 'postgres://u:s3cret@127.0.0.1:1/db'])
  t.equal(r.code, 2)
  t.match(r.err, /--derive <where>' argument 'sideways' is invalid\. Allowed choices are in-database, in-node/)
  const both = await run(['project', 'history', '--derive', 'in-node', '--partitions', '2', '--database-url', 'postgres://u:s3cret@127.0.0.1:1/db'])
  t.equal(both.code, 2)
  t.match(both.err, /--partitions: needs --derive in-database/)
  const many = await run(['project', 'history', '--partitions', '100', '--database-url', 'postgres://u:s3cret@127.0.0.1:1/db'])
  t.equal(many.code, 2)
  t.match(many.err, /--partitions: at most 32/)
})

t.test('an unknown command is a usage error; --help and --version are not', async (t) => {
  t.equal((await run(['frobnicate'])).code, 2)
  const help = await run(['run', '--help'])
  t.equal(help.code, 0)
  t.match(help.out, /--batch-max-wait-ms <value>/)
  t.match(help.out, /PERSISTOR_BATCH_MAX_WAIT_MS/)
  t.match(help.out, /PERSISTOR_HTTP_PORT; default 9464\]/)
  // project history listens on no port unless given one (review 56: its help said 9464).
  const project = await run(['project', 'history', '--help'])
  t.match(project.out.replace(/\s+/g, ' '), /PERSISTOR_HTTP_PORT; default none: with --follow, listens only when given a port/)
  t.equal((await run(['--version'])).code, 0)
})

t.test('migrate against an unreachable server fails with the redacted URL and the reason', async (t) => {
  const r = await run(['migrate', '--database-url', 'postgres://u:s3cret@127.0.0.1:1/db'])
  t.equal(r.code, 1)
  t.match(r.err, /postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/db/)
  t.match(r.err, /ECONNREFUSED|connect/)
  t.notMatch(r.err, /s3cret/)
})

t.test('sslmode in the database URL reaches the driver', async (t) => {
  // The test server does not offer TLS, so requiring it must fail, and say so.
  const r = await run(['migrate', '--database-url', 'postgres://root@127.0.0.1:5432/test?sslmode=require'])
  t.equal(r.code, 1)
  t.match(r.err, /does not support SSL/)
})

t.test('a usage error that quotes a URL does not quote its password (review 62: a mistyped --database_url=… printed it whole)', async (t) => {
  for (const args of [
    ['migrate', '--database_url=postgres://u:Typo-S3cret-Pw@127.0.0.1:1/db'],
    ['status', '--no-broker=postgres://u:Typo-S3cret-Pw@h/db'],
    ['status', '--format', 'postgres://u:Typo-S3cret-Pw@h/db'],
    ['run', '--mirror-url', 'esdb://admin:Esdb/Typo-S3cret-Pw@h1,h2?tls=false&bogus=1', '--amqp-url', 'amqp://127.0.0.1:1/', '--database-url', 'postgres://127.0.0.1:1/db'],
  ]) {
    const r = await run(args)
    t.equal(r.code, 2, String(args[1]))
    t.match(r.err, /:\*\*\*@/, `${args[1]}: the URL said, its password hidden`)
    t.notMatch(r.err + r.out, /S3cret/)
  }
})
