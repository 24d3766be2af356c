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

t.test('beyond maxConnections a new socket closes the oldest one serving no request: a probe still gets in, and the open sockets stay bounded (review 66: refusing the new one failed every /healthz)', async (t) => {
  const server = await startHttpServer(0, '127.0.0.1', { '/healthz': () => json(200, { status: 'ok' }) }, { maxConnections: 10, headersTimeoutMs: 60_000 })
  t.teardown(() => server.close())
  const open = new Set<Socket>()
  const hold = async (): Promise<{ socket: Socket; closed: Promise<void> }> => {
    const h = await slowClient(server.port)
    open.add(h.socket)
    void h.closed.then(() => open.delete(h.socket))
    return h
  }
  const held: Array<{ socket: Socket; closed: Promise<void> }> = []
  for (let i = 0; i < 10; i++) held.push(await hold())
  t.teardown(() => held.forEach((h) => h.socket.destroy()))
  t.equal((await fetch(`http://127.0.0.1:${server.port}/healthz`)).status, 200, 'the 11th, a probe, is answered')
  await held[0]?.closed
  t.pass('the oldest held socket was closed for it')
  // A flood of held sockets: each new one closes the oldest, the open ones stay at the limit.
  for (let i = 0; i < 30; i++) held.push(await hold())
  await eventually('at most 10 held open', () => open.size <= 10)
  t.equal((await fetch(`http://127.0.0.1:${server.port}/healthz`)).status, 200, 'a probe during the flood is answered')
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
