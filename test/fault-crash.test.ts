import { eventually } from '@vitrage-persistor/testing'
import t from 'tap'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, rowCount, setupWorld, storedSeqs, streamSeqs } from './support/setup.js'

const TOTAL = 100_000
const KILLS = 6

t.test(`kill -9 at ${KILLS} random moments while ${TOTAL.toLocaleString()} messages stream in: each stored once, in publish order`, async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const publishing = streamSeqs(world, TOTAL, 8_000)
  const kills: Array<{ afterMs: number; stored: number }> = []
  for (let i = 0; i < KILLS; i++) {
    const p = startPersistor(world.flags(['--batch-size', '500', '--prefetch', '1000']))
    t.teardown(() => p.kill('SIGKILL'))
    await p.waitFor(isConsuming, 'consuming')
    // A random moment: in a batch being filled, in a COPY, between commit and ack...
    const afterMs = 100 + Math.floor(Math.random() * 1500)
    await new Promise((r) => setTimeout(r, afterMs))
    p.kill('SIGKILL')
    await p.exited
    kills.push({ afterMs, stored: await rowCount(world) })
  }
  t.comment(`kills (ms after consuming, rows then): ${JSON.stringify(kills)}`)
  await publishing
  const last = startPersistor(world.flags())
  t.teardown(() => last.kill('SIGKILL'))
  await eventually(
    'every message stored',
    async () => {
      last.assertAlive()
      return (await rowCount(world)) >= TOTAL && (await world.broker.depth(world.names.queue)) === 0
    },
    { timeoutMs: 180_000 },
  )
  t.ok(kills.filter((k, i) => k.stored > (kills[i - 1]?.stored ?? 0)).length >= 3, 'most kills interrupted an ingesting persistor')
  const seqs = await storedSeqs(world)
  t.equal(seqs.length, TOTAL, 'no message lost, none stored twice')
  t.ok(seqs.every((s, i) => s === i), 'id order is publish order')
  last.kill('SIGTERM')
  t.equal((await last.exited).code, 0)
})
