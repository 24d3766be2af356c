import { encodeEnvelopeV2, encodeMessageText } from '@vitrage-persistor/core'
import t from 'tap'
import { deadLetterReason, describeDeadLetter, originOf, requeueHeaders, requeueMarks } from './dead-letters.js'

const messageId = '0b6f6a3e-1c1d-4a43-9d0e-7bd2a0f5d7a1'
const body = (payload: string): Buffer =>
  Buffer.from(
    encodeEnvelopeV2(encodeMessageText({ messageId, eventType: 'vitrage.graph.change', publisherId: 'vitrage.graph', priority: 'INFO', timestamp: '2026-11-30 10:00:00.000000' }, payload)),
  )

const persistorHeaders = {
  'x-app': 'kept',
  'x-persistor-error': 'body-too-large',
  'x-persistor-error-detail': 'body is 3000 bytes, the limit is 2000',
  'x-persistor-original-exchange': 'vitrage',
  'x-persistor-original-routing-key': 'vitrage_persistor.info',
  'x-persistor-dead-lettered-at': '2026-11-30T10:00:01.000Z',
}

t.test('a dead letter of the persistor is described by its headers, and by the notification inside it', async (t) => {
  const content = body('{"blob": "xxxx"}')
  t.same(describeDeadLetter(3, content, persistorHeaders), {
    position: 3,
    reason: 'body-too-large',
    detail: 'body is 3000 bytes, the limit is 2000',
    deadLetteredAt: '2026-11-30T10:00:01.000Z',
    originalExchange: 'vitrage',
    originalRoutingKey: 'vitrage_persistor.info',
    requeued: 0,
    bytes: content.byteLength,
    // decoded whatever its size: a body-too-large letter still names its message
    messageId,
    eventType: 'vitrage.graph.change',
  })
})

t.test('a message RabbitMQ dead-lettered itself is described by its x-death record', async (t) => {
  const time = new Date('2026-11-30T09:00:00Z')
  const d = describeDeadLetter(1, Buffer.from('not json'), {
    'x-death': [{ count: 1, reason: 'expired', queue: 'q', time, exchange: 'vitrage', 'routing-keys': ['vitrage_persistor.info'] }],
  })
  t.equal(d.reason, 'broker:expired')
  t.equal(d.originalExchange, 'vitrage')
  t.equal(d.originalRoutingKey, 'vitrage_persistor.info')
  t.equal(d.deadLetteredAt, time.toISOString())
  t.equal(d.messageId, null, 'a body that does not decode has no message id')
})

t.test('a letter that does not decode still shows the message id and event type it has', async (t) => {
  const badId = Buffer.from(encodeEnvelopeV2(JSON.stringify({ message_id: 'x', event_type: 'vitrage.alarm.activate', payload: {} })))
  t.match(describeDeadLetter(1, badId, { 'x-persistor-error': 'invalid-message-id' }), { messageId: 'x', eventType: 'vitrage.alarm.activate' })
  const noType = Buffer.from(JSON.stringify({ message_id: messageId, event_type: 7, payload: {} }))
  t.match(describeDeadLetter(1, noType, undefined), { messageId, eventType: null }, 'a bare (v1) message; a non-string is not shown')
  const long = Buffer.from(JSON.stringify({ message_id: 'm'.repeat(500) }))
  t.equal(describeDeadLetter(1, long, undefined).messageId?.length, 200, 'cut short')
  t.match(describeDeadLetter(1, Buffer.from(encodeEnvelopeV2('not json')), undefined), { messageId: null, eventType: null })
})

t.test('a message with neither header is unknown, not an error', async (t) => {
  t.equal(deadLetterReason(undefined), 'unknown')
  t.equal(deadLetterReason({ 'x-death': 'not a list' }), 'unknown')
  t.same(describeDeadLetter(1, Buffer.alloc(0), undefined).detail, null)
})

t.test('a requeued copy drops the error headers and death records, keeps its origin and counts the requeue', async (t) => {
  const headers = { ...persistorHeaders, 'x-death': [{ reason: 'rejected' }], 'x-first-death-queue': 'q', 'x-persistor-requeued': 1 }
  const summary = describeDeadLetter(1, body('{}'), headers)
  t.equal(summary.requeued, 1)
  t.same(requeueHeaders(headers, summary), {
    'x-app': 'kept',
    'x-persistor-original-exchange': 'vitrage',
    'x-persistor-original-routing-key': 'vitrage_persistor.info',
    'x-persistor-requeued': 2,
  })
})

t.test('the persistor names a requeued message by its original exchange and key, any other by its delivery', async (t) => {
  const delivery = { exchange: '', routingKey: 'vitrage_persistor.persistor' }
  t.same(originOf(delivery, { 'x-persistor-requeued': 1, 'x-persistor-original-exchange': 'vitrage', 'x-persistor-original-routing-key': 'vitrage_persistor.info' }), {
    exchange: 'vitrage',
    routingKey: 'vitrage_persistor.info',
  })
  // Without the requeue mark, headers a publisher set are not trusted to rename the origin.
  t.same(originOf(delivery, { 'x-persistor-original-exchange': 'forged', 'x-persistor-original-routing-key': 'forged' }), delivery)
  t.same(originOf(delivery, { 'x-persistor-requeued': 1 }), delivery, 'a mark without both names keeps the delivery')
})

t.test('dead-letter times: amqplib timestamps are read, and a time no Date can hold is null, never a throw', async (t) => {
  const amqpTimestamp = { '!': 'timestamp', value: 1_796_000_000 }
  t.equal(describeDeadLetter(1, Buffer.alloc(0), { 'x-death': [{ reason: 'expired', time: amqpTimestamp }] }).deadLetteredAt, new Date(1_796_000_000_000).toISOString())
  for (const bad of [1e20, Number.NaN, { '!': 'timestamp', value: 1e20 }, new Date(Number.NaN), { nested: true }]) {
    t.equal(describeDeadLetter(1, Buffer.alloc(0), { 'x-persistor-error': 'invalid-json', 'x-persistor-dead-lettered-at': bad }).deadLetteredAt, null, JSON.stringify(bad))
  }
})

t.test('the requeue marks the persistor keeps when it must drop the headers are small and its own', async (t) => {
  t.same(requeueMarks({ 'x-persistor-requeued': 2, 'x-persistor-requeue-run': '6f1c2a8e-5d43-4c51-9d7e-0a4f0e7f3b11', other: 'x' }), {
    'x-persistor-requeued': 2,
    'x-persistor-requeue-run': '6f1c2a8e-5d43-4c51-9d7e-0a4f0e7f3b11',
  })
  t.same(requeueMarks({ 'x-persistor-requeue-run': 'r'.repeat(70_000), 'x-persistor-requeued': 'many' }), {}, 'a forged, oversized mark is not carried')
})

t.test('a compressed letter is named up to maxInflated bytes decompressed, and says what it inflated; 0 names none', async (t) => {
  const zlib = await import('node:zlib')
  const big = body(JSON.stringify({ text: 'x'.repeat(2 * 1024 * 1024) }))
  const gz = zlib.deflateSync(big)
  const headers = { 'x-persistor-error': 'body-too-large', compression: 'application/x-gzip' }
  const inflated: number[] = []
  // Over the persistor's default limit (1 MiB), as a body-too-large letter is: still named (review 55).
  t.match(describeDeadLetter(1, gz, headers, { onInflated: (n) => inflated.push(n) }), { messageId, eventType: 'vitrage.graph.change', bytes: gz.byteLength })
  t.same(inflated, [big.byteLength])
  t.match(describeDeadLetter(1, gz, headers, { maxInflated: 1024 * 1024, onInflated: (n) => inflated.push(n) }), { messageId: null }, 'past the limit: not named')
  t.equal(inflated[1], 1024 * 1024, 'charged what it inflated before stopping')
  t.match(describeDeadLetter(1, gz, headers, { maxInflated: 0, onInflated: (n) => inflated.push(n) }), { messageId: null, reason: 'body-too-large' })
  t.match(describeDeadLetter(1, Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), { compression: 'application/x-lzma' }, { onInflated: (n) => inflated.push(n) }), { messageId: null })
  t.equal(inflated.length, 2, 'nothing inflated for 0 or a method it cannot read')
})
