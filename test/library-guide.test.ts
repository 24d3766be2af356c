/**
 * docs/library.md's example, run as written: the packages used as a library, through their
 * package roots only, against the real broker and database. If this file changes, so does the
 * guide (it quotes the part between the `guide:` markers).
 */
import t from 'tap'
import { rawFixtures } from './support/fixtures.js'
import { declarePersistorTopology, setupWorld } from './support/setup.js'

t.test('the library guide: ingest in-process, a followed graph caught up to the head, alarm history and RCA, everything closed', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const settings = { databaseUrl: world.db.url, amqpUrl: world.broker.url, exchange: world.names.exchange, topic: world.names.topic, queue: world.names.queue }
  for (const m of rawFixtures()) await world.broker.publish(world.names.exchange, world.names.routingKey, Buffer.from(m.body), { contentType: 'application/json', deliveryMode: 2 })

  // guide: start
  const { makeScrubber, secretsOf, silentLogger } = await import('@vitrage-persistor/core')
  const { createIngestMetrics, defaultPersistorOptions, Persistor } = await import('@vitrage-persistor/ingest')
  const { caughtUp, followGraph, HistoryRunner, rca } = await import('@vitrage-persistor/projections')
  const { PgEventStore, setupDatabase } = await import('@vitrage-persistor/store-postgres')
  const { Registry } = await import('prom-client')

  // The schema (idempotent; a role that may not migrate skips this and runs `migrate` elsewhere).
  const migrated = await setupDatabase(settings.databaseUrl)()
  if (migrated._tag === 'Left') throw new Error(`migrate: ${migrated.left.message}`)

  // One store, owned here: the persistor, the follower and the runner use it, never close it.
  const scrub = makeScrubber(secretsOf([settings.amqpUrl, settings.databaseUrl]))
  const store = new PgEventStore({ connectionString: settings.databaseUrl, maxConnections: 4, scrub })

  // Ingest, in this process: the defaults of `vitrage-persistor run`, with our names.
  const persistor = new Persistor(
    { ...defaultPersistorOptions(settings.amqpUrl), exchange: settings.exchange, topic: settings.topic, queue: settings.queue },
    { store, logger: silentLogger, metrics: createIngestMetrics(new Registry()), scrub, onDefect: (e) => console.error('persistor defect', e) },
  )
  persistor.start()

  // A warm graph: one subscription kept for as long as the graph is wanted.
  const follow$ = followGraph({ reader: store, snapshots: store, clock: store, signal: store })
  const following = follow$.subscribe()

  // Wait for the 400 captured notifications to be stored, then for the graph to apply them.
  let head = 0
  for (const started = Date.now(); head < 400 && Date.now() - started < 30_000; ) {
    const h = await store.headId()()
    if (h._tag === 'Right') head = h.right
    await new Promise((r) => setTimeout(r, 50))
  }
  const { graph, position } = await caughtUp(follow$, head, { timeoutMs: 30_000 })

  // Alarm history: catch up once (or runner.start() to follow), then ask.
  const runner = new HistoryRunner({ reader: store, store, signal: store })
  const projected = await runner.catchUp()
  if (projected._tag === 'Left') throw new Error(`history: ${projected.left.message}`)
  const active = await store.queryAlarms({ active: true, sort: ['-start_timestamp'] })()
  if (active._tag === 'Left') throw new Error(`alarms: ${active.left.message}`)
  const first = active.right[0]
  const causes = first === undefined ? undefined : await rca(store, first.vitrage_id)

  // Close in order: what uses the store first, the store last.
  await persistor.close()
  following.unsubscribe()
  await runner.close()
  await store.close()
  // guide: end

  t.equal(position, 400, 'the graph is at the head')
  const { canonicalJson } = await import('@vitrage-persistor/projections')
  const { readFileSync } = await import('node:fs')
  const { fixturePath } = await import('./support/fixtures.js')
  t.same(JSON.parse(canonicalJson(graph)), JSON.parse(readFileSync(fixturePath('vitrage-seed7-400.graph.json'), 'utf8')), 'the graph Vitrage built from the same traffic')
  t.equal(active.right.length, 15, '15 alarms active at the end of the captured traffic')
  t.ok(causes !== undefined && causes._tag === 'Right' && causes.right.nodes.length >= 1, 'RCA around the newest active alarm')
  t.same(await store.headId()(), { _tag: 'Left', left: { kind: 'fatal', message: 'the event store is closed', code: 'store-closed' } })
})

t.test('docs/library.md quotes this example as it runs (imports written statically)', async (t) => {
  const { readFileSync } = await import('node:fs')
  const source = readFileSync(new URL(import.meta.url), 'utf8')
  const guide = source.slice(source.indexOf('  // guide: start\n') + 18, source.indexOf('  // guide: end'))
  const body = (lines: string[], indent: RegExp): string[] => lines.map((l) => l.replace(indent, '')).filter((l) => !/^const \{ .* \} = await import\(|^import /.test(l) && l.trim() !== '')
  const doc = readFileSync(new URL('../docs/library.md', import.meta.url), 'utf8')
  const block = /```ts\n([\s\S]*?)```/.exec(doc)?.[1] ?? ''
  t.same(body(block.split('\n'), /^$/), body(guide.split('\n'), /^ {2}/), 'the same statements')
  const imported = (text: string, re: RegExp): string[] => [...text.matchAll(re)].map((m) => `${m[1]} from ${m[2]}`).sort()
  t.same(imported(block, /^import \{ (.*) \} from '(.*)'$/gm), imported(guide, /const \{ (.*) \} = await import\('(.*)'\)/g), 'the same imports')
})
