/**
 * The workspace's patch of @eventstore/db-client 6.2.1 encodes BatchAppend requests itself
 * (patches/@eventstore__db-client@6.2.1.patch). These tests hold it to what the unpatched client
 * put on the wire: the same requests, split at the same events, byte for byte, as the message
 * objects 6.2.1 built and google-protobuf encoded (rebuilt here the way 6.2.1 builds them).
 */
import { randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import { binaryEvent, jsonEvent, type EventData } from '@eventstore/db-client'
import sharedPb from '@eventstore/db-client/generated/shared_pb.js'
import streamsPb from '@eventstore/db-client/generated/streams_pb.js'
import t from 'tap'

const require = createRequire(import.meta.url)
const { eventBatcher } = require('@eventstore/db-client/dist/streams/appendToStream/batchAppend.js') as {
  eventBatcher: (events: EventData[], correlation: sharedPb.UUID, options: streamsPb.BatchAppendReq.Options,
    maxBatchSize: number) => Iterable<streamsPb.BatchAppendReq>
}

const uuid = (text: string): sharedPb.UUID => new sharedPb.UUID().setString(text)

const optionsFor = (stream: string, revision: bigint): streamsPb.BatchAppendReq.Options =>
  new streamsPb.BatchAppendReq.Options()
    .setStreamIdentifier(new sharedPb.StreamIdentifier().setStreamName(Buffer.from(stream, 'utf8')))
    .setStreamPosition(revision.toString(10))

/** The unpatched client's batcher: one message object per event, sized by encoding it. */
const reference = (events: EventData[], correlation: sharedPb.UUID, options: streamsPb.BatchAppendReq.Options,
  maxBatchSize: number): Uint8Array[] => {
  const request = (withOptions: boolean) => {
    const r = new streamsPb.BatchAppendReq().setCorrelationId(correlation).setIsFinal(false)
    return withOptions ? r.setOptions(options) : r
  }
  const out: Uint8Array[] = []
  let current = request(true)
  let size = 0
  for (const event of events) {
    const message = new streamsPb.BatchAppendReq.ProposedMessage().setId(uuid(event.id))
    message.getMetadataMap().set('type', event.type)
    message.getMetadataMap().set('content-type', event.contentType)
    const data = event.data as unknown
    if (event.contentType === 'application/json') {
      message.setData(data instanceof Uint8Array ? data : Buffer.from(JSON.stringify(data), 'utf8'))
    } else {
      message.setData(data as Uint8Array)
    }
    const metadata = event.metadata as unknown
    if (metadata) {
      message.setCustomMetadata(metadata instanceof Uint8Array && metadata.constructor === Uint8Array
        ? metadata : Buffer.from(JSON.stringify(metadata), 'utf8'))
    }
    const messageSize = message.serializeBinary().length
    if (size + messageSize >= maxBatchSize) {
      out.push(current.serializeBinary())
      current = request(false)
      size = 0
    }
    size += messageSize
    current.addProposedMessages(message)
  }
  out.push(current.setIsFinal(true).serializeBinary())
  return out
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex')

const mixed = (): EventData[] => [
  jsonEvent({ type: 'vitrage.graph.change', data: { id: 1, name: 'host-1', nested: { a: [1, 2, 3] } } }),
  jsonEvent({ type: 'json-as-bytes', data: new TextEncoder().encode('{"stored":"as text"}') as never,
    metadata: { id: 7, collector_timestamp: '2024-01-01T00:00:08Z' } }),
  jsonEvent({ type: 'métadonnées-ünïcode-☃', data: { text: 'é☃𝄞' }, metadata: new Uint8Array([1, 2, 3]) as never }),
  binaryEvent({ type: 'binary', data: Uint8Array.from({ length: 300 }, (_, i) => i % 256) }),
  binaryEvent({ type: 'empty-binary', data: new Uint8Array(0) }),
  jsonEvent({ type: 'empty-object', data: {} }),
  jsonEvent({ type: 'x'.repeat(200), data: { big: 'y'.repeat(20_000) }, metadata: {} }),
  jsonEvent({ id: randomUUID().toUpperCase(), type: 'upper-case-id', data: [] }),
]

t.test('one request: the same bytes as the unpatched client', async (t) => {
  const events = mixed()
  const correlation = uuid(randomUUID())
  const options = optionsFor('vitrage-events', 41n)
  const got = [...eventBatcher(events, correlation, options, 3 * 1024 * 1024)].map((r) => hex(r.serializeBinary()))
  t.same(got, reference(events, correlation, options, 3 * 1024 * 1024).map(hex))
  t.equal(got.length, 1)
})

t.test('split requests: same split points, options only on the first, is_final only on the last', async (t) => {
  const events = Array.from({ length: 40 }, (_, i) => mixed()[i % 8] as EventData)
  const correlation = uuid(randomUUID())
  const options = optionsFor('per-type-é', 0n)
  for (const max of [1, 500, 2_000, 25_000, 60_000]) {
    const got = [...eventBatcher(events, correlation, options, max)]
    const want = reference(events, correlation, options, max)
    t.same(got.map((r) => hex(r.serializeBinary())), want.map(hex), `max batch size ${max}`)
    const decoded = got.map((r) => streamsPb.BatchAppendReq.deserializeBinary(r.serializeBinary()))
    t.same(decoded.map((r) => r.hasOptions()), decoded.map((_, i) => i === 0), `options, max ${max}`)
    t.same(decoded.map((r) => r.getIsFinal()), decoded.map((_, i) => i === decoded.length - 1), `is_final, max ${max}`)
    t.equal(decoded.reduce((n, r) => n + r.getProposedMessagesList().length, 0), events.length)
  }
})

t.test('no events: one final request with the options', async (t) => {
  const correlation = uuid(randomUUID())
  const options = optionsFor('s', 3n)
  t.same([...eventBatcher([], correlation, options, 1024)].map((r) => hex(r.serializeBinary())),
    reference([], correlation, options, 1024).map(hex))
})

t.test('an encoded request still describes itself (the client logs it with toObject at debug level)', async (t) => {
  const [request] = [...eventBatcher(mixed().slice(0, 1), uuid(randomUUID()), optionsFor('s', 0n), 1024)]
  const object = request?.toObject()
  t.equal(object?.proposedMessagesList.length, 1)
  t.equal(object?.isFinal, true)
})
