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

t.test('a short password is scrubbed where it stands as a password, not in the words of a log line', async (t) => {
  const scrub = makeScrubber(secretsOf(['amqp://guest:info@h/', 'postgres://u@h/db?password=warn']))
  const line = '{"level":"info","msg":"connect amqp://guest:info@h/ failed","note":"warn me","url":"postgres://u@h/db?password=warn&x=1"}'
  t.equal(scrub(line), '{"level":"info","msg":"connect amqp://guest:***@h/ failed","note":"warn me","url":"postgres://u@h/db?password=***&x=1"}')
})

t.test("any URL's password is scrubbed, known or not (a driver echoing another connection string)", async (t) => {
  const scrub = makeScrubber([])
  t.equal(scrub('Unknown option key "x"\nesdb://admin:EsPw@127.0.0.1:1?tls=false&x=1\n'), 'Unknown option key "x"\nesdb://admin:***@127.0.0.1:1?tls=false&x=1\n')
  t.equal(scrub('postgres://root@127.0.0.1/db and mailto:a@b'), 'postgres://root@127.0.0.1/db and mailto:a@b')
  t.equal(scrub('connect amqp://u:p@ss@h:5672/ failed, then esdb://a:b@c:1?x=1'), 'connect amqp://u:***@h:5672/ failed, then esdb://a:***@c:1?x=1', 'a raw @ in the password, and two URLs on a line')
})

t.test('an EventStoreDB password with a raw /, ? or # (its client reads the password to the first @) and host lists are redacted whole (reviews 62, 66: logged in full)', async (t) => {
  const url = 'esdb://admin:Esdb/S3cret+Pw==@127.0.0.1:1,127.0.0.1:2?tls=false'
  t.equal(redactUrl(url), 'esdb://admin:***@127.0.0.1:1,127.0.0.1:2?tls=false')
  t.equal(redactUrl('esdb://admin:Pa?ss-Secret-1@127.0.0.1:1?tls=false'), 'esdb://admin:***@127.0.0.1:1?tls=false')
  t.equal(redactUrl('kurrentdb+discover://admin:a#b/c@h1:2113'), 'kurrentdb+discover://admin:***@h1:2113')
  t.equal(redactUrl('esdb://admin:123/x@h1:2113?tls=false'), 'esdb://admin:***@h1:2113?tls=false', 'a password WHATWG would read as a port and a path')
  t.equal(redactUrl('esdb://h1:2113?tls=false'), 'esdb://h1:2113?tls=false', 'none')
  t.same(secretsOf([url]), ['Esdb/S3cret+Pw=='])
  t.same(secretsOf(['esdb://admin:Pa?ss-Secret-1@h:1']), ['Pa?ss-Secret-1'])
  t.same(secretsOf(['esdb://admin:p%2Fss-Secret@h:1']), ['p%2Fss-Secret', 'p/ss-Secret'], 'raw and decoded, as the client decodes it')
  const scrub = makeScrubber([])
  t.equal(scrub(`connect ${url} failed: x`), 'connect esdb://admin:***@127.0.0.1:1,127.0.0.1:2?tls=false failed: x', 'in driver text, unknown')
  t.equal(scrub('esdb://admin:Pa?ss-Secret-1@h:1?tls=false refused'), 'esdb://admin:***@h:1?tls=false refused')
  t.equal(makeScrubber(secretsOf([url]))('password Esdb/S3cret+Pw== refused'), 'password *** refused', 'known')
})

t.test('a port and a path followed by an @ in ordinary URLs are not taken for a password (review 66)', async (t) => {
  const scrub = makeScrubber([])
  t.equal(scrub('see http://host:9464/users/ops@example.com'), 'see http://host:9464/users/ops@example.com')
  t.equal(scrub('amqp://rabbit:5672/tenant@prod'), 'amqp://rabbit:5672/tenant@prod')
})
