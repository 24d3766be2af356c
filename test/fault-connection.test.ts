import { eventually } from '@vitrage-persistor/testing'
import t from 'tap'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { closeConnectionsNamed } from './support/rabbitmqctl.js'
import { declarePersistorTopology, rowCount, setupWorld, storedSeqs, streamSeqs } from './support/setup.js'

const TOTAL = 40_000

t.test('its broker connection force-closed three times during ingest: it reconnects, never acks a dead tag, loses and doubles nothing', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const publishing = streamSeqs(world, TOTAL, 5_000)
  const p = startPersistor(world.flags(['--batch-size', '250', '--prefetch', '1000']))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  const name = `vitrage-persistor pid ${p.child.pid} (consume)`
  for (let generation = 2; generation <= 4; generation++) {
    await eventually('progress', async () => {
      p.assertAlive()
      return (await rowCount(world)) > ((generation - 1) * TOTAL) / 4
    })
    t.equal(await closeConnectionsNamed(name, 'fault test'), 1, `closed the connection (${generation - 1})`)
    await p.waitFor((l) => l.msg === 'consuming' && l['generation'] === generation, `reconnection ${generation}`)
  }
  await publishing
  await eventually('everything stored', async () => (await rowCount(world)) === TOTAL && (await world.broker.depth(world.names.queue)) === 0, { timeoutMs: 120_000 })
  t.same(await storedSeqs(world), Array.from({ length: TOTAL }, (_, i) => i), 'each once, in publish order')
  const channelErrors = p.lines.filter((l) => l.msg === 'broker channel error')
  t.same(channelErrors, [], 'no channel error (an ack with a dead delivery tag would close the channel with one)')
  t.equal(p.lines.filter((l) => l.msg === 'broker session lost; held messages will be redelivered').length, 3)
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})
