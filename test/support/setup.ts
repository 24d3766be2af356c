/**
 * Per-test-file isolation: a database cloned from the migrated template, unique exchange,
 * topic and queue names, and cleanup of both when the test ends.
 */
import { schemaTemplate } from '@vitrage-persistor/store-postgres'
import { connectTestBroker, createTestDatabase, eventually, type PrivateRabbit, startPrivateRabbit, type TestBroker, type TestDatabase, uniqueName } from '@vitrage-persistor/testing'
import pg from 'pg'
import { message, v2Body } from './messages.js'
import type { Test } from 'tap'

export interface Names {
  readonly exchange: string
  readonly topic: string
  readonly queue: string
  readonly routingKey: string
  readonly deadQueue: string
  /** Everything a test may have declared, for cleanup. */
  readonly queues: string[]
  readonly exchanges: string[]
}

export const uniqueNames = (): Names => {
  const base = uniqueName('vpt')
  const exchange = `${base}_x`
  const topic = `${base}_topic`
  const queue = `${base}_q`
  return {
    exchange,
    topic,
    queue,
    routingKey: `${topic}.info`,
    deadQueue: `${queue}.dead`,
    queues: [queue, `${queue}.dead`, `${topic}.info`],
    exchanges: [exchange, `${queue}.dlx`],
  }
}

export interface World {
  readonly db: TestDatabase
  readonly broker: TestBroker
  readonly names: Names
  readonly sql: pg.Pool
  /** CLI flags pointing the persistor at this world; `extra` may repeat a flag (the last one wins). */
  readonly flags: (extra?: readonly string[]) => string[]
}

export const setupWorld = async (t: Test): Promise<World> => {
  const db = await createTestDatabase(schemaTemplate)
  const broker = await connectTestBroker()
  const names = uniqueNames()
  const sql = new pg.Pool({ connectionString: db.url, max: 2 })
  // pool.end() resolves before its idle connections have closed; dropping the database (WITH
  // (FORCE)) can terminate one first, and the pool would raise that unhandled.
  sql.on('error', () => {})
  t.teardown(async () => {
    await sql.end()
    await broker.cleanup({ queues: names.queues, exchanges: names.exchanges })
    await db.drop()
  })
  return {
    db,
    broker,
    names,
    sql,
    flags: (extra = []) => [
      'run',
      '--database-url',
      db.url,
      '--amqp-url',
      broker.url,
      '--exchange',
      names.exchange,
      '--topic',
      names.topic,
      '--queue',
      names.queue,
      '--http-port',
      '0',
      ...extra,
    ],
  }
}

export interface FixtureMessage {
  readonly exchange: string
  readonly routingKey: string
  readonly properties: { contentType: string; contentEncoding: string; deliveryMode: number; priority: number; headers: Record<string, unknown> }
  readonly body: string
}

/** Declares the persistor's topology for these names, as the persistor itself would. */
export const declarePersistorTopology = async (world: World): Promise<void> => {
  const { declareTopology } = await import('@vitrage-persistor/ingest')
  await declareTopology(world.broker.connection, {
    exchange: world.names.exchange,
    topic: world.names.topic,
    queue: world.names.queue,
    compatQueue: false,
    osloDurable: false,
  })
}

/** Publishes `count` small notifications with confirms, in windows; returns their message ids in order. */
export const publishMany = async (world: World, count: number, make: (i: number) => Buffer): Promise<void> => {
  const window = 500
  for (let start = 0; start < count; start += window) {
    const end = Math.min(count, start + window)
    for (let i = start; i < end; i++) {
      world.broker.channel.publish(world.names.exchange, world.names.routingKey, make(i), { contentType: 'application/json', contentEncoding: 'utf-8', deliveryMode: 2 })
    }
    await world.broker.channel.waitForConfirms()
  }
}

export const rowCount = async (world: World): Promise<number> => (await world.sql.query<{ n: number }>('SELECT count(*)::int AS n FROM event')).rows[0]?.n ?? 0

/** The payload `seq` of every row in id order. */
export const storedSeqs = async (world: World): Promise<number[]> =>
  (await world.sql.query<{ seq: number }>(`SELECT (payload->>'seq')::int AS seq FROM event ORDER BY id`)).rows.map((r) => r.seq)

/** Reads one metric's value from a Prometheus text page. */
export const metricValue = (page: string, name: string): number | undefined => {
  const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(page)
  return m ? Number(m[1]) : undefined
}

/** Publishes seq 0..total-1 at about `perSecond`, with confirms; resolves when all are confirmed. */
export const streamSeqs = async (world: World, total: number, perSecond: number): Promise<void> => {
  const window = 500
  const started = Date.now()
  for (let start = 0; start < total; start += window) {
    for (let seq = start; seq < Math.min(total, start + window); seq++) {
      world.broker.channel.publish(world.names.exchange, world.names.routingKey, v2Body(message({ seq })), { contentType: 'application/json', deliveryMode: 2 })
    }
    await world.broker.channel.waitForConfirms()
    const due = started + ((start + window) / perSecond) * 1000
    if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()))
  }
}


/**
 * For fault tests that disturb the broker (restart it, raise an alarm): a private RabbitMQ node,
 * a database of its own, and names; everything removed at teardown.
 */
export const setupPrivateWorld = async (
  t: Test,
): Promise<{ rabbit: PrivateRabbit; db: TestDatabase; sql: pg.Pool; count: () => Promise<number>; names: { exchange: string; topic: string; queue: string } }> => {
  const rabbit = await startPrivateRabbit()
  t.teardown(rabbit.destroy)
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(db.drop)
  const sql = new pg.Pool({ connectionString: db.url, max: 1 })
  // pool.end() resolves before its idle connection has closed; the database dropped right after
  // (WITH (FORCE)) can terminate that connection first, and the pool would raise it unhandled.
  sql.on('error', () => {})
  t.teardown(() => sql.end())
  const count = async (): Promise<number> => Number((await sql.query('SELECT count(*) AS n FROM event')).rows[0].n)
  return { rabbit, db, sql, count, names: { exchange: uniqueName('vpt_x'), topic: uniqueName('vpt_t'), queue: uniqueName('vpt_q') } }
}

/**
 * What restoring the database from a backup taken at event `id` leaves (or failing over to a
 * replica that had received it last): the later events gone, and their ids handed out again;
 * checkpoints and snapshots no further than that, as the backup held them.
 */
export const rewindLog = async (world: World, id: number, options: { readonly eventsOnly?: boolean } = {}): Promise<void> => {
  const c = await world.sql.connect()
  try {
    await c.query('BEGIN')
    // The append-only triggers stand aside, as they do for a restore (pg_restore loads data so).
    await c.query('SET LOCAL session_replication_role = replica')
    await c.query('DELETE FROM event WHERE id > $1', [id])
    // The event table alone restored (eventsOnly): checkpoints and snapshots stay as they were.
    if (options.eventsOnly !== true) {
      await c.query('UPDATE projection_checkpoint SET position = $1 WHERE position > $1', [id])
      await c.query('DELETE FROM projection_snapshot WHERE event_id > $1', [id])
    }
    await c.query('COMMIT')
    await c.query(`ALTER TABLE event ALTER COLUMN id RESTART WITH ${id + 1}`)
  } finally {
    c.release()
  }
}

/** RabbitMQ's memory alarm on a private node: every publisher blocked while it is raised. */
export const memoryAlarm = (rabbit: PrivateRabbit): { readonly raised: () => Promise<boolean>; readonly raise: () => Promise<void>; readonly clear: () => Promise<void> } => {
  const raised = async (): Promise<boolean> => /memory/.test(await rabbit.ctl('eval', 'rabbit_alarm:get_alarms().'))
  return {
    raised,
    raise: async () => {
      await rabbit.ctl('set_vm_memory_high_watermark', 'absolute', '1')
      await eventually('memory alarm raised', raised, { timeoutMs: 30_000 })
    },
    clear: async () => {
      await rabbit.ctl('set_vm_memory_high_watermark', '0.4')
      await eventually('memory alarm cleared', async () => !(await raised()), { timeoutMs: 30_000 })
    },
  }
}
