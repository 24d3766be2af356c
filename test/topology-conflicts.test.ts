import t from 'tap'
import { freePort } from '@vitrage-persistor/testing'
import { startPersistor } from './support/persistor-process.js'
import { setupWorld } from './support/setup.js'

// An operator (or an older deployment) declared one of the persistor's own queues differently:
// the persistor says which and what to do, at error level from the first attempt, and keeps
// retrying without touching it.
for (const which of ['queue', 'dead-letter queue'] as const) {
  t.test(`its ${which} declared with other arguments: an error naming it and the fix, nothing altered`, async (t) => {
    const world = await setupWorld(t)
    const name = which === 'queue' ? world.names.queue : world.names.deadQueue
    await world.broker.channel.assertExchange(world.names.exchange, 'topic', { durable: false })
    await world.broker.channel.assertQueue(name, { durable: true, arguments: { 'x-max-length': 10 } })
    const port = await freePort()
    const p = startPersistor(world.flags(['--http-port', String(port)]))
    t.teardown(() => p.kill('SIGKILL'))
    const line = await p.waitFor((l) => l.msg === 'cannot consume from the broker; retrying', 'the refusal')
    t.equal(line['level'], 'error', 'an error at once, not a warning')
    const says = new RegExp(`"${name.replace(/\./g, '\\.')}".* exists with other a.*; delete it or choose another --queue`)
    t.match(line['err'], says)
    // /readyz says why too, as it does for the database (it said only "backoff").
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`)
    t.equal(ready.status, 503)
    const body = (await ready.json()) as { checks: { broker: string } }
    t.match(body.checks.broker, /^(backoff|connecting): /)
    t.match(body.checks.broker, says)
    p.kill('SIGTERM')
    t.equal((await p.exited).code, 0)
  })
}
