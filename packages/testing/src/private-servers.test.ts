import { existsSync } from 'node:fs'
import amqp from 'amqplib'
import pg from 'pg'
import t, { type Test } from 'tap'
import { startPrivatePostgres, startPrivateRabbit } from './index.js'

const query = async (url: string, sql: string, values: unknown[] = []): Promise<unknown[]> => {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    return (await c.query(sql, values)).rows
  } finally {
    await c.end()
  }
}

const timed = async (t: Test, what: string, fn: () => Promise<unknown>): Promise<void> => {
  const started = Date.now()
  await fn()
  t.comment(`${what}: ${Date.now() - started} ms`)
}

t.test('private PostgreSQL: a table survives stop and start, an immediate stop cuts connections, destroy removes it', async (t) => {
  const started = Date.now()
  const db = await startPrivatePostgres()
  t.teardown(db.destroy)
  t.comment(`start, initdb included: ${Date.now() - started} ms`)

  t.match(db.url, /^postgres:\/\/root@127\.0\.0\.1:\d+\/postgres$/)
  t.equal(db.urlFor('other'), db.url.replace(/\/postgres$/, '/other'))
  t.not(db.port, 5432, 'not the shared server')
  t.same(
    await query(db.url, `SELECT current_setting('listen_addresses') AS listen, current_user AS "user"`),
    [{ listen: '127.0.0.1', user: 'root' }],
  )

  await query(db.url, 'CREATE TABLE kept (v text)')
  await query(db.url, 'INSERT INTO kept VALUES ($1)', ['before the fast stop'])
  await timed(t, 'stop (fast)', () => db.stop())
  t.equal(db.running, false)
  await t.rejects(query(db.url, 'SELECT 1'), { code: 'ECONNREFUSED' }, 'nothing listens while stopped')
  await timed(t, 'start after a fast stop', () => db.start())
  t.same(await query(db.url, 'SELECT v FROM kept'), [{ v: 'before the fast stop' }], 'same data directory, same port')

  await query(db.url, 'INSERT INTO kept VALUES ($1)', ['committed before the crash'])
  const open = new pg.Client({ connectionString: db.url })
  // The server going away is also reported as an 'error' event, which must not crash the test.
  open.on('error', () => {})
  await open.connect()
  t.teardown(() => open.end().catch(() => {}))
  await timed(t, 'stop (immediate)', () => db.stop({ mode: 'immediate' }))
  await t.rejects(open.query('SELECT 1'), 'an open connection fails')
  await t.rejects(query(db.url, 'SELECT 1'), { code: 'ECONNREFUSED' }, 'new connections are refused')
  await timed(t, 'start after an immediate stop (crash recovery)', () => db.start())
  t.same(await query(db.url, 'SELECT v FROM kept ORDER BY v'), [{ v: 'before the fast stop' }, { v: 'committed before the crash' }])

  await db.destroy()
  t.equal(existsSync(db.directory), false, 'directory removed')
  await t.rejects(query(db.url, 'SELECT 1'), { code: 'ECONNREFUSED' }, 'server gone')
  await db.destroy()
  t.pass('destroy is idempotent')
  await t.rejects(db.start(), /after destroy/)
})

t.test('private RabbitMQ: a persistent message survives stop and kill, closeConnections closes clients, destroy removes it', async (t) => {
  const started = Date.now()
  const rabbit = await startPrivateRabbit()
  t.teardown(rabbit.destroy)
  t.comment(`start: ${Date.now() - started} ms`)

  t.match(rabbit.url, /^amqp:\/\/guest:guest@127\.0\.0\.1:\d+\/$/)
  t.not(rabbit.port, 5672, 'not the shared broker')
  t.match(rabbit.nodeName, /^vp_\d+_[0-9a-f]+@localhost$/)

  const queue = 'kept'
  const publish = async (body: string): Promise<void> => {
    const c = await amqp.connect(rabbit.url)
    try {
      const ch = await c.createConfirmChannel()
      await ch.assertQueue(queue, { durable: true })
      ch.sendToQueue(queue, Buffer.from(body), { persistent: true })
      await ch.waitForConfirms()
    } finally {
      await c.close()
    }
  }
  const takeOne = async (): Promise<string | undefined> => {
    const c = await amqp.connect(rabbit.url)
    try {
      const m = await (await c.createChannel()).get(queue, { noAck: true })
      return m === false ? undefined : m.content.toString()
    } finally {
      await c.close()
    }
  }

  await publish('survives a stop')
  await timed(t, 'stop', () => rabbit.stop())
  t.equal(rabbit.running, false)
  await t.rejects(amqp.connect(rabbit.url), { code: 'ECONNREFUSED' }, 'nothing listens while stopped')
  await timed(t, 'start after a stop', () => rabbit.start())
  t.equal(await takeOne(), 'survives a stop', 'durable queue and persistent message kept')

  await publish('survives a kill')
  await timed(t, 'kill', () => rabbit.kill())
  await t.rejects(amqp.connect(rabbit.url), { code: 'ECONNREFUSED' }, 'nothing listens once killed')
  await timed(t, 'start after a kill (recovery)', () => rabbit.start())
  t.equal(await takeOne(), 'survives a kill', 'a confirmed persistent message survives a hard kill')

  const connect = async (name: string): Promise<{ connection: amqp.ChannelModel; closed: Promise<Error | undefined> }> => {
    const connection = await amqp.connect(rabbit.url, { clientProperties: { connection_name: name } })
    connection.on('error', () => {})
    t.teardown(() => connection.close().catch(() => {}))
    return { connection, closed: new Promise((resolve) => connection.once('close', resolve)) }
  }
  const victim = await connect('victim')
  const bystander = await connect('bystander')
  t.equal(await rabbit.closeConnections('victim'), 1, 'by name: one connection closed')
  t.match(String(await victim.closed), /CONNECTION_FORCED/, 'the client sees close, with the reason')
  t.ok(await (await bystander.connection.createChannel()).checkQueue(queue), 'the other connection is untouched')
  t.equal(await rabbit.closeConnections(), 1, 'without a pattern: every connection')
  t.match(String(await bystander.closed), /CONNECTION_FORCED/)

  await rabbit.destroy()
  t.equal(existsSync(rabbit.directory), false, 'directory removed')
  await t.rejects(amqp.connect(rabbit.url), { code: 'ECONNREFUSED' }, 'node gone')
  await rabbit.destroy()
  t.pass('destroy is idempotent')
})
