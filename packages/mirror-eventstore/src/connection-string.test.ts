import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { checkConnectionString } from './connection-string.js'

t.test('connection strings the client cannot use are refused with its reason, never echoing the password', async (t) => {
  t.same(checkConnectionString('esdb://admin:EsPw@127.0.0.1:2113?tls=false'), E.right([]))
  const cases: Array<[string, RegExp]> = [
    ['esdb://admin:EsPw@', /expected host/],
    ['esdb://admin:EsPw@127.0.0.1:1?tls=false&tlsVerifyCert=maybe', /expected true or false/],
    ['esdb://admin:EsPw@127.0.0.1:1?tls=false&badopt=1', /^Unknown option key "badopt"$/],
    ['http://admin:EsPw@x', /expected esdb:\/\/ or esdb\+discover:\/\//],
    // Passed the parser, refused by the client's constructor (review 62: exit 1, not 2).
    ['esdb://admin:EsPw@127.0.0.1:1?tls=false&keepAliveInterval=-5', /Invalid keepAliveInterval "-5"/],
    ['esdb://admin:EsPw@127.0.0.1:1?userCertFile=/c.pem&tls=true', /userCertFile must be given with accompanying userKeyFile/],
  ]
  for (const [url, reason] of cases) {
    const r = checkConnectionString(url)
    t.ok(E.isLeft(r), url)
    if (E.isLeft(r)) {
      t.match(r.left, reason)
      t.notMatch(r.left, /EsPw/)
    }
  }
})

t.test("the client's other warnings come back as values, first line only; nothing reaches the console", async (t) => {
  const printed: unknown[] = []
  const original = console.warn
  console.warn = (...a: unknown[]) => printed.push(a)
  try {
    const r = checkConnectionString('esdb://admin:EsPw@127.0.0.1:2113?tls=false&tlsVerifyCert=false')
    t.same(r, E.right(['"tlsVerifyCert" is not currently supported by this client, and will have no effect.']))
  } finally {
    console.warn = original
  }
  t.same(printed, [])
})

t.test('files the string names are read when the mirror starts, not by the check: a certificate not mounted yet is not a usage error (review 66: exit 2, never restarted)', async (t) => {
  for (const url of [
    'esdb://admin:EsPw@127.0.0.1:1?tlsCAFile=/nonexistent/ca.pem',
    'esdb://admin:EsPw@127.0.0.1:1?tls=true&tlsCAFile=/nonexistent/ca.pem&keepAliveTimeout=5000',
    'esdb://admin:EsPw@127.0.0.1:1?userCertFile=/nonexistent/c.pem&userKeyFile=/nonexistent/k.pem',
    'esdb://admin:Es?Pw@127.0.0.1:1?tlsCAFile=/nonexistent/ca.pem',
  ]) {
    t.ok(E.isRight(checkConnectionString(url)), url)
  }
  t.match(checkConnectionString('esdb://127.0.0.1:1?tlsCAFile=/nonexistent/ca.pem&keepAliveInterval=-5'), E.left(/Invalid keepAliveInterval "-5"/), 'the other options still checked')
})
