import t from 'tap'
import { makeScrubber, redactUrl, secretsOf } from './redact.js'

t.test('passwords are replaced in connection strings', async (t) => {
  t.equal(redactUrl('amqp://guest:s3cret@localhost:5672/'), 'amqp://guest:***@localhost:5672/')
  t.equal(redactUrl('postgres://root@127.0.0.1/db'), 'postgres://root@127.0.0.1/db')
  t.equal(redactUrl('postgres://u:p%40ss@h/db?sslmode=require&password=x'), 'postgres://u:***@h/db?sslmode=require&password=***')
})

t.test('a scrubber removes every known secret from driver text', async (t) => {
  const scrub = makeScrubber(secretsOf(['amqp://guest:s3cr%40t@h/', 'postgres://u:hunter2@h/db', undefined]))
  t.equal(scrub('auth failed for s3cr@t and hunter2 and s3cr%40t'), 'auth failed for *** and *** and ***')
  t.equal(makeScrubber([])('unchanged'), 'unchanged')
})
