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
