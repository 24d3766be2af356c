/**
 * The operations endpoint: a tiny HTTP server with a route table. Handlers return a status and
 * a body; a handler that throws answers 500 without taking the server down.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

export interface Reply {
  readonly status: number
  readonly contentType: string
  /** A Buffer is written as it is, shared by every response that carries it (not copied per request). */
  readonly body: string | Buffer
  /** More response headers (lower-case names). */
  readonly headers?: Readonly<Record<string, string>>
}

export type Route = () => Promise<Reply> | Reply

export interface HttpServer {
  readonly port: number
  /** Stops accepting, ends idle keep-alive sockets, and the others after a grace second. Idempotent. */
  readonly close: () => Promise<void>
}

/** How long close() lets requests in progress finish. */
const CLOSE_GRACE_MS = 1_000

/**
 * Bytes of large response bodies being written at once, beyond which a further large one is
 * answered 503 (one is always served). Clients that ask for a large body (`/graph`: ~16 MB for
 * 30,000 vertices) and never read it held one copy each: 100 of them took `follow` from 163 MB to
 * 3.6 GB. Bodies under LARGE_BODY_BYTES (health, metrics, position) are never refused: a client
 * holding /graph unread must not make /healthz fail and a supervisor restart the service.
 */
const MAX_BODY_BYTES_IN_FLIGHT = 64 * 2 ** 20
const LARGE_BODY_BYTES = 2 ** 20
/** A large body whose reader takes nothing for this long is dropped (a client that asked and left it unread). */
const STALLED_READER_MS = 30_000

/**
 * The port answers anyone who can reach it (0.0.0.0 by default), without authentication: a client
 * opening sockets and never finishing a request must not take the process's file descriptors, or
 * its database and broker reconnects fail too (review 62: 20,000 slow sockets, EMFILE on every
 * connect, /healthz unanswered). Requests here are one line and a few headers: whoever has not
 * sent them within headersTimeoutMs (10 s) is answered 408 and dropped (Node's default waits 60 s
 * and checks every 30 s). Beyond maxConnections (256), a new socket makes room by closing the
 * oldest one that serves no request (one still sending its request, or an idle keep-alive), so
 * a probe still gets in: refusing the new one instead let 256 held sockets fail every /healthz,
 * and a liveness probe restart the service (review 66). Only when every socket is serving a
 * request is the new one closed.
 */
export interface HttpLimits {
  readonly maxConnections: number
  readonly headersTimeoutMs: number
}
const DEFAULT_LIMITS: HttpLimits = { maxConnections: 256, headersTimeoutMs: 10_000 }

/**
 * `fn` shared: calls while one runs get its answer, and so do calls up to `maxAgeMs` after it
 * started. A probe's check against a pool (/readyz's database ping) then costs one query however
 * many requests come at once (review 62: a flood of /readyz queued a ping per request on the
 * ingest pool's three connections, and ingest slowed by a fifth).
 */
export const sharedAnswer = <T>(fn: () => Promise<T>, maxAgeMs: number, now: () => number = () => performance.now()): (() => Promise<T>) => {
  let last: { readonly at: number; readonly answer: Promise<T> } | undefined
  return () => {
    const at = now()
    if (last === undefined || at - last.at >= maxAgeMs) last = { at, answer: fn() }
    return last.answer
  }
}

export const json = (status: number, value: unknown): Reply => ({ status, contentType: 'application/json', body: `${JSON.stringify(value)}\n` })

export const startHttpServer = (port: number, host: string, routes: Readonly<Record<string, Route>>, limits: HttpLimits = DEFAULT_LIMITS): Promise<HttpServer> =>
  new Promise((resolve, reject) => {
    let inFlight = 0
    const timeouts = {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.headersTimeoutMs,
      connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs),
    }
    const server: Server = createServer(timeouts, (req, res) => {
      const path = (req.url ?? '/').split('?')[0] as string
      const route = routes[path]
      if (route === undefined) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(`${JSON.stringify({ error: 'not found', routes: Object.keys(routes) })}\n`)
        return
      }
      // HEAD as GET without the body (some probes send it).
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { 'content-type': 'application/json', allow: 'GET, HEAD' }).end(`${JSON.stringify({ error: 'method not allowed', allow: ['GET', 'HEAD'] })}\n`)
        return
      }
      Promise.resolve()
        .then(route)
        .then(
          (reply) => {
            // The client went away while the route worked: nothing to write (its 'close' has
            // fired already, so a body counted now would never be uncounted).
            if (res.destroyed) return
            const body = req.method === 'HEAD' ? undefined : reply.body
            const size = body === undefined ? 0 : Buffer.byteLength(body)
            if (size >= LARGE_BODY_BYTES) {
              if (inFlight > 0 && inFlight + size > MAX_BODY_BYTES_IN_FLIGHT) {
                res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end(`${JSON.stringify({ error: 'busy: other large responses are still being read' })}\n`)
                return
              }
              inFlight += size
              // Counted until the socket has taken it all, or the client went away.
              res.once('close', () => (inFlight -= size))
              res.setTimeout(STALLED_READER_MS, () => res.destroy())
            }
            res.writeHead(reply.status, { ...reply.headers, 'content-type': reply.contentType }).end(body)
          },
          (e: unknown) => res.writeHead(500, { 'content-type': 'application/json' }).end(`${JSON.stringify({ error: String(e) })}\n`),
        )
    })
    // Open sockets, oldest first, with how many requests each is serving now.
    const serving = new Map<Socket, number>()
    server.on('connection', (socket: Socket) => {
      serving.set(socket, 0)
      socket.once('close', () => serving.delete(socket))
      if (serving.size <= limits.maxConnections) return
      for (const [other, requests] of serving) {
        if (requests === 0 && other !== socket) {
          other.destroy()
          return
        }
      }
      socket.destroy()
    })
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const socket = req.socket
      const count = (n: number): void => void (serving.has(socket) && serving.set(socket, (serving.get(socket) ?? 0) + n))
      count(1)
      res.once('close', () => count(-1))
    })
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      let closing: Promise<void> | undefined
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () => {
          closing ??= new Promise<void>((r) => {
            server.close(() => r())
            server.closeIdleConnections()
            // A keep-alive client polling faster than the idle timeout (a health checker), or a
            // request waiting on a database that stopped answering, kept close() pending for as
            // long as it lasted: after a grace second every connection is dropped.
            setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS).unref()
          })
          return closing
        },
      })
    })
  })

/** What a command gets from `listenOrReport`: the server (none with port 0), or a failure already reported. */
export type Listening = { readonly ok: true; readonly server: HttpServer | undefined } | { readonly ok: false }

/**
 * The endpoints of a long-running command: port 0 means none; a port that cannot be taken is
 * printed as `vitrage-persistor <command>: cannot listen on host:port: reason` for the caller to
 * end with exit 1, not thrown.
 */
export const listenOrReport = async (
  io: { readonly err: (text: string) => void },
  command: string,
  port: number,
  host: string,
  routes: Readonly<Record<string, Route>>,
): Promise<Listening> => {
  if (port === 0) return { ok: true, server: undefined }
  try {
    return { ok: true, server: await startHttpServer(port, host, routes) }
  } catch (e) {
    io.err(`vitrage-persistor ${command}: cannot listen on ${host}:${port}: ${e instanceof Error ? e.message : String(e)}\n`)
    return { ok: false }
  }
}
