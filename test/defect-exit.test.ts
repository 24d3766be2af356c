import { spawn } from 'node:child_process'
import { once } from 'node:events'
import t from 'tap'
import { cliArgs } from './support/persistor-process.js'

t.test('an exception thrown from an event handler ends the process as a defect: said, exit 70', async (t) => {
  // `run` waiting for a database that is not there (it retries), while something throws from a
  // timer: once the CLI has installed its handler (a fixed delay threw before it, under load), or
  // after 20 s without one, so that a CLI without the handler fails here rather than hanging.
  const thrower =
    'data:text/javascript,const t0 = Date.now(); const w = setInterval(() => { if (process.listenerCount("uncaughtException") > 0 || Date.now() - t0 > 20000) { clearInterval(w); setTimeout(() => { throw new Error("thrown from an event handler, quoting postgres://root:db-secret-pw@127.0.0.1:1/nothing and amqp-secret-pw") }, 10) } }, 10)'
  // The error quotes the URLs' passwords, as a driver's might: the defect's text is scrubbed.
  const child = spawn(process.execPath, ['--import', thrower, ...cliArgs(['run', '--database-url=postgres://root:db-secret-pw@127.0.0.1:1/nothing', '--amqp-url', 'amqp://guest:amqp-secret-pw@127.0.0.1:1'])], {
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '/tmp', LOG_LEVEL: 'error' },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  t.teardown(() => child.kill('SIGKILL'))
  let err = ''
  child.stderr.on('data', (d: Buffer) => void (err += d.toString()))
  const [code] = (await once(child, 'exit')) as [number | null]
  t.equal(code, 70)
  t.match(err, /vitrage-persistor: internal error: Error: thrown from an event handler/)
  t.notMatch(err, /secret-pw/, 'no password in the defect\'s text')
})
