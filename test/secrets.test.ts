import { createTestDatabase, databaseUrl, freePort } from '@vitrage-persistor/testing'
import { schemaTemplate } from '@vitrage-persistor/store-postgres'
import t from 'tap'
import { startPersistor } from './support/persistor-process.js'

const AMQP_SECRET = 'Zq9-amqp-pass'
const PG_SECRET = 'Xk7-pg-pass'

t.test('passwords never appear in the output of a run whose database is unreachable', async (t) => {
  const p = startPersistor(['run', '--amqp-url', `amqp://guest:${AMQP_SECRET}@127.0.0.1:1/`, '--database-url', `postgres://root:${PG_SECRET}@127.0.0.1:1/nothing`, '--http-port', '0'])
  t.teardown(() => p.kill('SIGKILL'))
  let retries = 0
  await p.waitFor((l) => l.msg === 'database not available; retrying' && ++retries >= 3, 'three database retries')
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0, 'SIGTERM while waiting for the database exits cleanly')
  const out = p.output()
  t.match(out, /database not available; retrying/)
  t.notMatch(out, AMQP_SECRET)
  t.notMatch(out, PG_SECRET)
  t.match(out, /postgres:\/\/root:\*\*\*@127\.0\.0\.1:1\/nothing/, 'the URL is shown redacted')
})

t.test('passwords never appear in logs or /metrics while the broker refuses the connection', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(db.drop)
  const url = new URL(databaseUrl(db.name))
  url.password = PG_SECRET // trust authentication ignores it; it must still never be printed
  const port = await freePort()
  const p = startPersistor(['run', '--amqp-url', `amqp://guest:${AMQP_SECRET}@127.0.0.1:1/`, '--database-url', url.toString(), '--http-port', String(port)])
  t.teardown(() => p.kill('SIGKILL'))
  let retries = 0
  await p.waitFor((l) => l.msg === 'cannot consume from the broker; retrying' && ++retries >= 2, 'two broker retries')
  const ready = await fetch(`http://127.0.0.1:${port}/readyz`)
  t.equal(ready.status, 503, 'not ready without the broker')
  const readyBody = await ready.text()
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200, 'alive all the same')
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
  for (const text of [p.output(), readyBody, metrics]) {
    t.notMatch(text, AMQP_SECRET)
    t.notMatch(text, PG_SECRET)
  }
  t.match(readyBody, /"database":"ok"/)
})
