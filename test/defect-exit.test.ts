import { spawn } from 'node:child_process'
import { once } from 'node:events'
import t from 'tap'
import { cliArgs } from './support/persistor-process.js'

t.test('an exception thrown from an event handler ends the process as a defect: said, exit 70', async (t) => {
  // `run` waiting for a database that is not there (it retries), while something throws from a timer.
  const thrower = 'data:text/javascript,setTimeout(() => { throw new Error("thrown from an event handler") }, 500)'
  const child = spawn(process.execPath, ['--import', thrower, ...cliArgs(['run', '--database-url', 'postgres://root@127.0.0.1:1/nothing', '--amqp-url', 'amqp://guest:guest@127.0.0.1:1'])], {
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '/tmp', LOG_LEVEL: 'error' },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  t.teardown(() => child.kill('SIGKILL'))
  let err = ''
  child.stderr.on('data', (d: Buffer) => void (err += d.toString()))
  const [code] = (await once(child, 'exit')) as [number | null]
  t.equal(code, 70)
  t.match(err, /vitrage-persistor: internal error: Error: thrown from an event handler/)
})
