/**
 * A publisher that writes AMQP 0-9-1 frames itself, for headers amqplib cannot encode: a field
 * table given as bytes (nested thousands deep, or with a type tag amqplib does not know). It
 * connects, publishes one message with publisher confirms, and closes; what the broker refuses
 * is a rejection naming its close reason.
 */
import net from 'node:net'

export interface RawPublish {
  readonly url: string
  readonly exchange: string
  readonly routingKey: string
  readonly body: Buffer
  /** The headers property: the content of a field table (without its length prefix). */
  readonly headersTable: Buffer
}

const shortStr = (s: string): Buffer => {
  const b = Buffer.from(s)
  return Buffer.concat([Buffer.from([b.length]), b])
}
const longStr = (b: Buffer): Buffer => {
  const n = Buffer.alloc(4)
  n.writeUInt32BE(b.length)
  return Buffer.concat([n, b])
}
const method = (classId: number, methodId: number, ...args: Buffer[]): Buffer => {
  const head = Buffer.alloc(4)
  head.writeUInt16BE(classId)
  head.writeUInt16BE(methodId, 2)
  return Buffer.concat([head, ...args])
}
const frame = (type: number, channel: number, payload: Buffer): Buffer => {
  const head = Buffer.alloc(7)
  head.writeUInt8(type)
  head.writeUInt16BE(channel, 1)
  head.writeUInt32BE(payload.length, 3)
  return Buffer.concat([head, payload, Buffer.from([0xce])])
}
const u16 = (n: number): Buffer => {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n)
  return b
}

/** Field-table bytes: `key` holding a table nested `depth` deep (`{a: {a: … 1}}`). */
export const deepTableField = (key: string, depth: number): Buffer => {
  let inner = Buffer.concat([shortStr('a'), Buffer.from('I'), Buffer.from([0, 0, 0, 1])])
  for (let i = 1; i < depth; i++) inner = Buffer.concat([shortStr('a'), Buffer.from('F'), longStr(inner)])
  return Buffer.concat([shortStr(key), Buffer.from('F'), longStr(inner)])
}

/** Field-table bytes: `key` holding an array nested `depth` deep (`[[… [1]]]`). */
export const deepArrayField = (key: string, depth: number): Buffer => {
  let inner = Buffer.concat([Buffer.from('I'), Buffer.from([0, 0, 0, 1])])
  for (let i = 1; i < depth; i++) inner = Buffer.concat([Buffer.from('A'), longStr(inner)])
  return Buffer.concat([shortStr(key), Buffer.from('A'), longStr(inner)])
}

/** Field-table bytes: `key` with RabbitMQ's 'L' (an unsigned 64-bit integer), which amqplib 2.3 does not know. */
export const unsignedLongField = (key: string, value: bigint): Buffer => {
  const v = Buffer.alloc(8)
  v.writeBigUInt64BE(value)
  return Buffer.concat([shortStr(key), Buffer.from('L'), v])
}

/** Field-table bytes: `key` holding a byte array ('x'). */
export const bytesField = (key: string, value: Buffer): Buffer => Buffer.concat([shortStr(key), Buffer.from('x'), longStr(value)])

/** Field-table bytes: `key` holding a long string. */
export const stringField = (key: string, value: string): Buffer => Buffer.concat([shortStr(key), Buffer.from('S'), longStr(Buffer.from(value))])

export const publishRaw = async (p: RawPublish): Promise<void> => {
  const url = new URL(p.url)
  const socket = net.connect(Number(url.port || 5672), url.hostname)
  let pending = Buffer.alloc(0)
  let wake: (() => void) | undefined
  let failure: Error | undefined
  socket.on('data', (d: Buffer) => {
    pending = Buffer.concat([pending, d])
    wake?.()
  })
  socket.on('error', (e) => {
    failure = e
    wake?.()
  })
  socket.on('close', () => {
    failure ??= new Error('connection closed by the broker')
    wake?.()
  })
  // The next method frame (heartbeats and others skipped); a close is a rejection with its reason.
  const nextMethod = async (): Promise<{ classId: number; methodId: number; args: Buffer }> => {
    for (;;) {
      if (pending.length >= 7) {
        const size = pending.readUInt32BE(3)
        if (pending.length >= size + 8) {
          const type = pending.readUInt8(0)
          const payload = pending.subarray(7, 7 + size)
          pending = pending.subarray(size + 8)
          if (type !== 1) continue
          const classId = payload.readUInt16BE(0)
          const methodId = payload.readUInt16BE(2)
          const args = payload.subarray(4)
          if ((classId === 10 && methodId === 50) || (classId === 20 && methodId === 40)) {
            throw new Error(`the broker closed the ${classId === 10 ? 'connection' : 'channel'}: ${args.readUInt16BE(0)} ${args.subarray(3, 3 + args.readUInt8(2)).toString()}`)
          }
          return { classId, methodId, args }
        }
      }
      if (failure !== undefined) throw failure
      await new Promise<void>((resolve) => {
        wake = resolve
      })
      wake = undefined
    }
  }
  const expect = async (classId: number, methodId: number): Promise<Buffer> => {
    const m = await nextMethod()
    if (m.classId !== classId || m.methodId !== methodId) throw new Error(`expected ${classId}.${methodId}, got ${m.classId}.${m.methodId}`)
    return m.args
  }
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    socket.write(Buffer.from('AMQP\x00\x00\x09\x01', 'latin1'))
    await expect(10, 10) // start
    const user = decodeURIComponent(url.username || 'guest')
    const password = decodeURIComponent(url.password || 'guest')
    socket.write(frame(1, 0, method(10, 11, longStr(Buffer.alloc(0)), shortStr('PLAIN'), longStr(Buffer.from(`\0${user}\0${password}`)), shortStr('en_US'))))
    const tune = await expect(10, 30)
    socket.write(frame(1, 0, method(10, 31, tune.subarray(0, 6), u16(0)))) // its channel-max and frame-max, no heartbeat
    const vhost = url.pathname.length > 1 ? decodeURIComponent(url.pathname.slice(1)) : '/'
    socket.write(frame(1, 0, method(10, 40, shortStr(vhost), shortStr(''), Buffer.from([0]))))
    await expect(10, 41)
    socket.write(frame(1, 1, method(20, 10, shortStr(''))))
    await expect(20, 11)
    socket.write(frame(1, 1, method(85, 10, Buffer.from([0])))) // confirm.select
    await expect(85, 11)
    socket.write(frame(1, 1, method(60, 40, u16(0), shortStr(p.exchange), shortStr(p.routingKey), Buffer.from([0]))))
    // content-type, content-encoding, headers, delivery-mode (persistent).
    const size = Buffer.alloc(8)
    size.writeBigUInt64BE(BigInt(p.body.length))
    const properties = Buffer.concat([shortStr('application/json'), shortStr('utf-8'), longStr(p.headersTable), Buffer.from([2])])
    socket.write(frame(2, 1, Buffer.concat([u16(60), u16(0), size, u16(0x8000 | 0x4000 | 0x2000 | 0x1000), properties])))
    socket.write(frame(3, 1, p.body))
    const confirm = await nextMethod()
    if (confirm.classId !== 60 || confirm.methodId !== 80) throw new Error(`the broker did not confirm the message (${confirm.classId}.${confirm.methodId})`)
    socket.write(frame(1, 0, method(10, 50, u16(200), shortStr(''), u16(0), u16(0))))
    await expect(10, 51)
  } finally {
    socket.destroy()
  }
}
