import t from 'tap'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { setupWorld } from './support/setup.js'

t.test('a --batch-size larger than --prefetch (a batch that can never fill) is warned about at start, naming both; it still runs', async (t) => {
  const world = await setupWorld(t)
  const p = startPersistor(world.flags(['--batch-size', '5000', '--prefetch', '2000']))
  t.teardown(() => p.kill('SIGKILL'))
  const warned = await p.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('prefetch is below batch size'), 'the warning')
  t.match(warned, { level: 'warn', batchSize: 5000, prefetch: 2000 })
  await p.waitFor(isConsuming, 'consuming')
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
  t.notOk(p.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('prefetch is below batch size') && l !== warned), 'said once')
})

t.test('the defaults (1,000 of 2,000) are not warned about', async (t) => {
  const world = await setupWorld(t)
  const p = startPersistor(world.flags())
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
  t.notOk(p.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('prefetch is below batch size')))
})
