import t from 'tap'
import { classifyAmqpError } from './amqp-shared.js'

t.test('broker errors: a reply code from the error or its message, fatal for what retrying cannot pass', async (t) => {
  // As amqplib gives them (messages copied from its errors against RabbitMQ 3.10).
  const handshake = new Error('Handshake terminated by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN."')
  t.same(classifyAmqpError(handshake), { kind: 'fatal', code: '403' })
  t.same(classifyAmqpError(Object.assign(new Error('Operation failed: ExchangeDeclare; 404 (NOT-FOUND) with message "NOT_FOUND - no exchange"'), { code: 404 })), { kind: 'fatal', code: '404' })
  t.same(classifyAmqpError(Object.assign(new Error('Operation failed: QueueDeclare; 406 (PRECONDITION-FAILED)'), { code: 406 })), { kind: 'fatal', code: '406' })
  t.same(classifyAmqpError(Object.assign(new Error('Connection closed: 320 (CONNECTION-FORCED) with message "CONNECTION_FORCED - broker forced connection closure"'), { code: 320 })), { kind: 'transient', code: '320' })
  t.same(classifyAmqpError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' })), { kind: 'transient', code: 'ECONNREFUSED' })
  t.same(classifyAmqpError(new Error('Expected ConnectionOpenOk; got <ConnectionClose channel:0>')), { kind: 'fatal', code: '530' }, 'a vhost that does not exist: amqplib gives no reason')
  t.same(classifyAmqpError(Object.assign(new Error('Channel closed by server: 406 (PRECONDITION-FAILED) with message "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1800000 ms."'), { code: 406 })), { kind: 'transient', code: '406' }, 'an ack timeout passes on a new channel')
  t.same(classifyAmqpError(Object.assign(new Error('Connection closed: 530 (NOT-ALLOWED) with message "NOT_ALLOWED - vhost / is down"'), { code: 530 })), { kind: 'transient', code: '530' })
  t.same(classifyAmqpError(new Error('Channel ended, no reply will be forthcoming')), { kind: 'transient', code: undefined })
  t.same(classifyAmqpError(undefined), { kind: 'transient', code: undefined })
})

t.test('what a message carried that amqplib cannot write again is left out of a fallback publish', async (t) => {
  const { cutUtf8, fallbackRepublishOptions, writableRoutingKey } = await import('./amqp-shared.js')
  const p = { contentType: 'application/json', contentEncoding: 'x'.repeat(300), timestamp: 2 ** 64, messageId: '\ufffd'.repeat(200), headers: { evil: 1 } } as unknown as Parameters<typeof fallbackRepublishOptions>[0]
  t.same(fallbackRepublishOptions(p, { ours: 1 }), { mandatory: true, deliveryMode: 2, contentType: 'application/json', headers: { ours: 1 } })
  // kombu's compression header stays: without it the body could never be read again (review 54).
  for (const compression of ['application/x-gzip', 'x'.repeat(600), Buffer.from('application/x-bz2')]) {
    const kept = fallbackRepublishOptions({ ...p, headers: { evil: 1, compression } }, { ours: 1 })
    t.same(kept.headers, { compression, ours: 1 })
  }
  for (const compression of [7, { '!': 'bogus' }, 'x'.repeat(2000)]) {
    t.same(fallbackRepublishOptions({ ...p, headers: { compression } }, { ours: 1 }).headers, { ours: 1 }, 'what may not encode again is not kept')
  }
  t.equal(writableRoutingKey('k.'.repeat(100)), 'k.'.repeat(100))
  t.equal(writableRoutingKey('\ufffd'.repeat(200)), '', 'over 255 bytes of UTF-8: no key (the dead-letter exchange fans out)')
  t.equal(cutUtf8('é'.repeat(200), 255), 'é'.repeat(127), 'whole characters, at most 255 bytes')
  t.equal(cutUtf8('short', 255), 'short')
})
