import { eventually } from '@vitrage-persistor/testing'
import t from 'tap'
import { json, startHttpServer } from './http.js'

t.test('routes answer GET and HEAD; another method is 405 with Allow, an unknown path 404 with the routes', async (t) => {
  const server = await startHttpServer(0, '127.0.0.1', { '/healthz': () => json(200, { status: 'ok' }) })
  t.teardown(() => server.close())
  const url = `http://127.0.0.1:${server.port}`
  const get = await fetch(`${url}/healthz`)
  t.same([get.status, await get.json()], [200, { status: 'ok' }])
  const head = await fetch(`${url}/healthz`, { method: 'HEAD' })
  t.same([head.status, await head.text()], [200, ''], 'HEAD: the status, no body')
  const post = await fetch(`${url}/healthz`, { method: 'POST' })
  t.equal(post.status, 405)
  t.equal(post.headers.get('allow'), 'GET, HEAD')
  t.same(await post.json(), { error: 'method not allowed', allow: ['GET', 'HEAD'] })
  const missing = await fetch(`${url}/nope`)
  t.same([missing.status, await missing.json()], [404, { error: 'not found', routes: ['/healthz'] }])
})

t.test('close() ends within its grace second although a client keeps polling on a keep-alive socket and a request waits on a route that never answers', async (t) => {
  const { Agent, request } = await import('node:http')
  let entered: () => void = () => {}
  const stuckArrived = new Promise<void>((r) => (entered = r))
  const server = await startHttpServer(0, '127.0.0.1', {
    '/healthz': () => json(200, { status: 'ok' }),
    // As a route waiting on a database that stopped answering.
    '/metrics': () => {
      entered()
      return new Promise<never>(() => {})
    },
  })
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const get = (path: string): Promise<number> =>
    new Promise((resolve) => {
      const req = request({ host: '127.0.0.1', port: server.port, path, agent }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      })
      req.on('error', () => resolve(-1))
      req.end()
    })
  // A health checker polling every 100 ms (faster than any keep-alive timeout), and a scrape stuck.
  let polling = true
  let firstAnswer: (status: number) => void = () => {}
  const polled = new Promise<number>((r) => (firstAnswer = r))
  const poller = (async () => {
    while (polling) {
      firstAnswer(await get('/healthz'))
      await new Promise((r) => setTimeout(r, 100))
    }
  })()
  const stuck = new Agent({ keepAlive: true })
  t.teardown(() => stuck.destroy())
  const stuckEnded = new Promise<string>((resolve) =>
    request({ host: '127.0.0.1', port: server.port, path: '/metrics', agent: stuck }, () => resolve('answered'))
      .on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
      .end(),
  )
  // Both connections must be open when close() is called: a request not yet arrived would be
  // refused by the closed listener, and close() would end without having to drop anything.
  await stuckArrived
  t.equal(await polled, 200, 'the poller has its keep-alive connection')
  const started = performance.now()
  const closed = await Promise.race([server.close().then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 5_000).unref())])
  const ms = performance.now() - started
  polling = false
  await poller
  t.ok(closed, `close() ended (${Math.round(ms)} ms)`)
  t.ok(ms < 2_500, `within the grace second (${Math.round(ms)} ms)`)
  // Not awaited when close() hung: the stuck request would wait as long.
  t.equal(closed ? await stuckEnded : 'still open', 'ECONNRESET', 'the stuck request was dropped, not answered')
})

t.test('large bodies being written are bounded: a client that asks and does not read holds back others (503, Retry-After), never one copy each', async (t) => {
  const { connect } = await import('node:net')
  const big = Buffer.alloc(40 * 2 ** 20, 'x')
  const server = await startHttpServer(0, '127.0.0.1', { '/graph': () => ({ status: 200, contentType: 'application/json', body: big }), '/healthz': () => json(200, { status: 'ok' }) })
  t.teardown(() => server.close())
  // Asks, and never reads: the response stays in the socket's buffers.
  const stalled = connect(server.port, '127.0.0.1')
  stalled.pause()
  stalled.write('GET /graph HTTP/1.1\r\nhost: x\r\n\r\n')
  t.teardown(() => stalled.destroy())
  const url = `http://127.0.0.1:${server.port}`
  let busy: Response | undefined
  for (let i = 0; i < 200 && busy === undefined; i++) {
    const r = await fetch(`${url}/graph`)
    if (r.status === 503) busy = r
    else await r.arrayBuffer()
    if (busy === undefined) await new Promise((resolve) => setTimeout(resolve, 10))
  }
  t.equal(busy?.status, 503, 'a second large body while the first is unread: 503')
  t.equal(busy?.headers.get('retry-after'), '1')
  t.same((await fetch(`${url}/healthz`)).status, 200, 'small answers still pass')
  stalled.destroy()
  let ok = 0
  for (let i = 0; i < 200 && ok === 0; i++) {
    const r = await fetch(`${url}/graph`)
    if (r.status === 200) ok = (await r.arrayBuffer()).byteLength
    else await new Promise((resolve) => setTimeout(resolve, 10))
  }
  t.equal(ok, big.length, 'served again once the reader went away')
})

t.test('a client that goes away while a route works leaves nothing counted: aborted requests do not turn the endpoint into 503s', async (t) => {
  const { connect } = await import('node:net')
  const body = Buffer.alloc(2 * 2 ** 20, 'y')
  let answered = 0
  // As /metrics or /position waiting on the database, with a body over the large-body size.
  const slow = () => new Promise<{ status: number; contentType: string; body: Buffer }>((resolve) => setTimeout(() => { answered++; resolve({ status: 200, contentType: 'application/json', body }) }, 30))
  const server = await startHttpServer(0, '127.0.0.1', { '/slow': slow })
  t.teardown(() => server.close())
  // 40 requests of 2 MiB each (80 MiB, past the 64 MiB bound had each stayed counted), each
  // abandoned before its answer.
  for (let i = 0; i < 40; i++) {
    const s = connect(server.port, '127.0.0.1')
    s.write('GET /slow HTTP/1.1\r\nhost: x\r\n\r\n')
    await new Promise((resolve) => setTimeout(resolve, 5))
    s.destroy()
  }
  // Every route call has finished (and found its client gone) before the next request.
  await eventually('the 40 abandoned requests answered by the route', () => answered === 40, { timeoutMs: 10_000 })
  t.equal(answered, 40, 'each abandoned request reached the route')
  const r = await fetch(`http://127.0.0.1:${server.port}/slow`)
  t.equal(r.status, 200, 'served: nothing was left counted')
  t.equal((await r.arrayBuffer()).byteLength, body.length)
})
