import { eventually, freePort } from '@vitrage-persistor/testing'
import t from 'tap'
import { message, v2Body } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, metricValue, rowCount, setupWorld, storedSeqs } from './support/setup.js'

const TOTAL = 30_000

const stored = async (port: number): Promise<number> => {
  try {
    return metricValue(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), 'vitrage_persistor_events_stored_total') ?? 0
  } catch {
    return 0
  }
}

t.test('two instances on one queue: kill -9 the active one, the standby takes over within 5 s, nothing lost or twice', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const ports = [await freePort(), await freePort()] as const
  const instances = ports.map((port) => startPersistor(world.flags(['--http-port', String(port), '--batch-size', '200'])))
  for (const p of instances) t.teardown(() => p.kill('SIGKILL'))
  for (const p of instances) await p.waitFor(isConsuming, 'consuming')

  let published = 0
  const publishing = (async () => {
    for (; published < TOTAL; published += 250) {
      for (let seq = published; seq < published + 250; seq++) {
        world.broker.channel.publish(world.names.exchange, world.names.routingKey, v2Body(message({ seq })), { contentType: 'application/json', deliveryMode: 2 })
      }
      await world.broker.channel.waitForConfirms()
      await new Promise((r) => setTimeout(r, 25))
    }
  })()

  await eventually('ingest under way', async () => (await rowCount(world)) > 5_000)
  const counts = [await stored(ports[0]), await stored(ports[1])] as const
  const active = counts[0] > 0 ? 0 : 1
  const standby = 1 - active
  t.equal(counts[standby], 0, 'the standby stored nothing while the active one lived')
  const killedAt = Date.now()
  instances[active]?.kill('SIGKILL')
  await eventually('the standby to store', async () => (await stored(ports[standby] as number)) > 0, { timeoutMs: 10_000 })
  const takeoverMs = Date.now() - killedAt
  t.ok(takeoverMs < 5_000, `took over in ${takeoverMs} ms`)
  await publishing
  await eventually('everything stored', async () => (await rowCount(world)) >= TOTAL && (await world.broker.depth(world.names.queue)) === 0, { timeoutMs: 120_000 })
  const seqs = await storedSeqs(world)
  t.equal(seqs.length, TOTAL, 'nothing lost, nothing stored twice')
  t.ok(seqs.every((s, i) => s === i), 'order kept across the failover')
  instances[standby]?.kill('SIGTERM')
  t.equal((await instances[standby]?.exited)?.code, 0)
})
