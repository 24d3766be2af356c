/** Small pieces every broker client of this package uses the same way. */
import { within } from '@vitrage-persistor/core'
import amqp from 'amqplib'

export const isAmqpUrl = (url: string): boolean => {
  try {
    return ['amqp:', 'amqps:'].includes(new URL(url).protocol)
  } catch {
    return false
  }
}

/**
 * An amqplib error, classified once for the one-off clients (republish, dead-letter list and
 * requeue): its code is the broker's reply code (a channel or connection closed by the broker,
 * or a refused handshake, which amqplib gives only in its message) or the socket's errno. 403
 * (access refused: credentials, permissions), 404 (no such exchange or queue), 406 (declared
 * otherwise) and 530 (vhost missing or not allowed) do not pass by retrying; the rest (refused,
 * reset, a forced close) may, and so do the 406 of an ack that timed out and a 530 for a vhost
 * that is down. A connection closed while it opens (amqplib: "Expected ConnectionOpenOk; got
 * <ConnectionClose>", no reason given) is a vhost refused: 530. A wrong password was
 * 'transient' without a code: a retry loop never ended.
 */
export const classifyAmqpError = (e: unknown): { readonly kind: 'fatal' | 'transient'; readonly code: string | undefined } => {
  const err = (e ?? {}) as { readonly code?: unknown; readonly message?: unknown }
  const message = String(err.message ?? '')
  const inMessage = /\b([2-5]\d\d) \([A-Z_-]+\)/.exec(message)?.[1]
  const reply = typeof err.code === 'number' ? err.code : inMessage !== undefined ? Number(inMessage) : /Expected ConnectionOpenOk; got <ConnectionClose/.test(message) ? 530 : undefined
  if (reply !== undefined) {
    const passes = /acknowledgement .*timed out|is down|limit .*reached/i.test(message)
    return { kind: [403, 404, 406, 530].includes(reply) && !passes ? 'fatal' : 'transient', code: String(reply) }
  }
  return { kind: 'transient', code: typeof err.code === 'string' ? err.code : undefined }
}

/**
 * The publish options of a message published again (a dead letter, a requeued copy): its own
 * properties, persistent, and `mandatory`, so that a copy no queue takes comes back as a return
 * instead of being dropped. Headers are the caller's.
 */
export const republishOptions = (p: amqp.MessageProperties, headers: Record<string, unknown>): amqp.Options.Publish => ({
  mandatory: true,
  contentType: p.contentType,
  contentEncoding: p.contentEncoding,
  deliveryMode: 2,
  priority: p.priority,
  correlationId: p.correlationId,
  messageId: p.messageId,
  timestamp: p.timestamp,
  type: p.type,
  appId: p.appId,
  headers,
})

/** `s` cut to at most `bytes` bytes of UTF-8, at a character boundary. */
export const cutUtf8 = (s: string, bytes: number): string => {
  if (Buffer.byteLength(s) <= bytes) return s
  let out = ''
  let used = 0
  for (const ch of s) {
    const n = Buffer.byteLength(ch)
    if (used + n > bytes) break
    out += ch
    used += n
  }
  return out
}

/** A value amqplib writes as a short string (at most 255 bytes of UTF-8), else undefined. */
const shortString = (s: unknown): string | undefined => (typeof s === 'string' && Buffer.byteLength(s) <= 255 ? s : undefined)

/**
 * The publish options of a message published again when its own cannot be written again: what
 * came off the wire is not always what amqplib can encode (a header table with a '!' key, which it
 * takes for its type marker, or one naming 'long' with a value that is not a number; a timestamp
 * past 2^64; a message id of invalid UTF-8, 255 bytes on the wire and more once decoded). Every
 * such message stopped `run` at every start. Only the content type and encoding are kept, when
 * they are short strings, and of the headers kombu's `compression`, without which the body could
 * never be read again; the other `headers` are the caller's, built from values it controls.
 */
export const fallbackRepublishOptions = (p: amqp.MessageProperties, headers: Record<string, unknown>): amqp.Options.Publish => {
  const compression = keptCompression(p.headers?.['compression'])
  return {
    mandatory: true,
    deliveryMode: 2,
    ...(shortString(p.contentType) !== undefined ? { contentType: p.contentType as string } : {}),
    ...(shortString(p.contentEncoding) !== undefined ? { contentEncoding: p.contentEncoding as string } : {}),
    headers: compression !== undefined ? { compression, ...headers } : headers,
  }
}

// kombu's compression header, whatever it names, when it can be written again (a string or
// bytes of reasonable length: header strings are long strings, not limited to 255 bytes).
const keptCompression = (v: unknown): unknown => ((typeof v === 'string' && Buffer.byteLength(v) <= 1024) || (Buffer.isBuffer(v) && v.byteLength <= 1024) ? v : undefined)

/** A routing key amqplib can write (its short-string limit), else '' (the exchanges it goes to route by queue name or fan out). */
export const writableRoutingKey = (key: string): string => shortString(key) ?? ''

/** What a stoppable wait races against: resolves when `signal` aborts (at once if it has); never without one. */
export const STOPPED = Symbol('stopped')
export const whenAborted = (signal: AbortSignal | undefined): Promise<typeof STOPPED> =>
  new Promise((resolve) => {
    if (signal === undefined) return
    if (signal.aborted) resolve(STOPPED)
    else signal.addEventListener('abort', () => resolve(STOPPED), { once: true })
  })

/**
 * A one-off client's connect (10 s connect timeout) that a stop ends at once: STOPPED then, with
 * the socket destroyed (a signal of its own, which amqplib hands to net/tls.connect with the other
 * socket options; never aborted once connected), and the connection closed should it have
 * completed all the same. Without that, a broker that accepts and never answers would hold the
 * process until the connect timeout. A failed connect rejects.
 */
export const connectUnlessStopped = async (url: string, stopped: Promise<typeof STOPPED>, options: { readonly noDelay?: boolean } = {}): Promise<amqp.ChannelModel | typeof STOPPED> => {
  const socket = new AbortController()
  // `signal` is a net/tls.connect option amqplib's socket options type does not name.
  const socketOptions: Record<string, unknown> = { ...options, timeout: 10_000, signal: socket.signal }
  const connecting: Promise<amqp.ChannelModel> = amqp.connect(url, socketOptions)
  const connected = await Promise.race([connecting, stopped])
  if (connected !== STOPPED) return connected
  socket.abort()
  connecting.then((c) => closeConnection(c, Date.now() + 2_000), () => {})
  return STOPPED
}

/** Runs `fn` on a short-lived channel; a passive check that fails closes only that channel. */
export const onScratchChannel = async <T>(connection: amqp.ChannelModel, fn: (ch: amqp.Channel) => Promise<T>): Promise<T> => {
  const ch = await connection.createChannel()
  ch.on('error', () => {}) // the failure is reported by the rejected promise
  try {
    return await fn(ch)
  } finally {
    await ch.close().catch(() => {})
  }
}

export const isNotFound = (e: unknown): boolean => (e as { code?: unknown }).code === 404

/** A queue's ready messages and consumers; undefined when it does not exist (other failures throw). */
export const queueCounts = (connection: amqp.ChannelModel, name: string): Promise<{ ready: number; consumers: number } | undefined> =>
  onScratchChannel(connection, (ch) => ch.checkQueue(name)).then(
    (q) => ({ ready: q.messageCount, consumers: q.consumerCount }),
    (e: unknown) => (isNotFound(e) ? undefined : Promise.reject(e)),
  )

/**
 * Closes a broker connection, waiting for the broker's close-ok until the deadline, then drops
 * the socket: a blocked connection, or one the broker stopped answering, would otherwise keep it
 * half-open (amqplib only ends its side) and the process alive.
 */
export const closeConnection = async (connection: amqp.ChannelModel, deadline: number): Promise<void> => {
  await within(connection.close().catch(() => {}), deadline - Date.now(), undefined)
  // amqplib stops its heartbeat timers only once the close completes: cut short, they would keep
  // the process alive.
  const inner = (connection as unknown as { connection?: { stream?: { destroy?: () => void }; heartbeater?: { clear?: () => void } | null } }).connection
  inner?.heartbeater?.clear?.()
  inner?.stream?.destroy?.()
}
