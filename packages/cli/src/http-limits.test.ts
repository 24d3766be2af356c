import { connect, type Socket } from 'node:net'
import { eventually } from '@vitrage-persistor/testing'
import t from 'tap'
import { json, sharedAnswer, startHttpServer } from './http.js'

/** A socket that starts a request and never finishes its headers (slowloris). */
const slowClient = async (port: number): Promise<{ socket: Socket; closed: Promise<void> }> => {
  const socket = connect(port, '127.0.0.1')
  socket.on('error', () => {})
  // Read what the server answers (its 408), so its close reaches this side.
  socket.resume()
  const closed = new Promise<void>((r) => socket.once('close', () => r()))
  await new Promise<void>((r) => socket.once('connect', () => r()))
  socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n')
  return { socket, closed }
}

t.test('a client that never finishes its request is dropped after the headers timeout (review 62: Node waits 60 s by default)', async (t) => {
  const server = await startHttpServer(0, '127.0.0.1', { '/healthz': () => json(200, { status: 'ok' }) }, { maxConnections: 10, headersTimeoutMs: 500 })
  t.teardown(() => server.close())
  const slow = await slowClient(server.port)
  t.teardown(() => slow.socket.destroy())
  const started = performance.now()
  await slow.closed
  t.pass(`dropped after ${Math.round(performance.now() - started)} ms`)
})

t.test('beyond maxConnections a new socket is closed at once, and the port answers again once the held ones are dropped: the file descriptors stay bounded', async (t) => {
  const server = await startHttpServer(0, '127.0.0.1', { '/healthz': () => json(200, { status: 'ok' }) }, { maxConnections: 10, headersTimeoutMs: 2_000 })
  t.teardown(() => server.close())
  const held = await Promise.all(Array.from({ length: 10 }, () => slowClient(server.port)))
  t.teardown(() => held.forEach((h) => h.socket.destroy()))
  const refused = await fetch(`http://127.0.0.1:${server.port}/healthz`).then(
    (r) => r.status,
    (e: Error) => (e.cause as { code?: string } | undefined)?.code ?? e.message,
  )
  t.match(String(refused), /ECONNRESET|UND_ERR_SOCKET|other side closed/, `the 11th refused (${refused})`)
  await Promise.all(held.map((h) => h.closed))
  await eventually('answers again', async () => (await fetch(`http://127.0.0.1:${server.port}/healthz`).catch(() => undefined))?.status === 200)
})

t.test('sharedAnswer: calls while one runs, and up to maxAgeMs after it started, get its answer; later ones ask again', async (t) => {
  let clock = 0
  let calls = 0
  let release: (v: number) => void = () => {}
  const shared = sharedAnswer(() => {
    calls++
    return new Promise<number>((r) => (release = r))
  }, 1_000, () => clock)
  const flood = Array.from({ length: 200 }, () => shared())
  t.equal(calls, 1, '200 at once: one call')
  release(7)
  t.same(await Promise.all(flood), Array.from({ length: 200 }, () => 7))
  clock = 999
  t.equal(await shared(), 7)
  t.equal(calls, 1, 'within maxAgeMs: the same answer')
  clock = 1_000
  const again = shared()
  t.equal(calls, 2, 'after it: asked again')
  release(8)
  t.equal(await again, 8)
})
