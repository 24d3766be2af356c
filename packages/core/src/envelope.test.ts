import { readFileSync } from 'node:fs'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { encodeEnvelopeV2, encodeMessageText } from './encode.js'
import { decodeMessage, MAX_PAYLOAD_DEPTH } from './envelope.js'
import type { RejectionReason } from './rejection.js'

const options = { maxMessageBytes: 1024 * 1024 }
const fixture = new URL('../../../test/fixtures/vitrage-seed7-400.raw.jsonl', import.meta.url)
const captured = readFileSync(fixture, 'utf8')
  .trim()
  .split('\n')
  .map((line) => JSON.parse(line) as { body: string })

const message = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  message_id: '0c3d5df6-975a-4279-b48a-ffce4bcb99f7',
  publisher_id: 'vitrage.graph',
  event_type: 'vitrage.alarm.activate',
  priority: 'INFO',
  payload: { vitrage_id: 'a1' },
  timestamp: '2026-11-25 14:37:33.821020',
  _unique_id: 'ed574bf9423241e087ff9f41a76f3935',
  ...over,
})
const v2 = (msg: unknown): Buffer =>
  Buffer.from(JSON.stringify({ 'oslo.version': '2.0', 'oslo.message': typeof msg === 'string' ? msg : JSON.stringify(msg) }))

const reasonOf = (body: Uint8Array, opts = options): RejectionReason | 'ok' => {
  const r = decodeMessage(body, opts)
  return E.isLeft(r) ? r.left.reason : 'ok'
}

t.test('every captured Vitrage message decodes, keeping the inner text verbatim', async (t) => {
  const problems: string[] = []
  captured.forEach(({ body }, i) => {
    const r = decodeMessage(Buffer.from(body), options)
    if (E.isLeft(r)) return void problems.push(`${i}: ${r.left.reason} ${r.left.detail}`)
    const inner = (JSON.parse(body) as Record<string, string>)['oslo.message'] as string
    const msg = JSON.parse(inner) as Record<string, string>
    const expected = {
      messageText: inner,
      messageId: msg['message_id'],
      eventType: msg['event_type'],
      publisherId: 'vitrage.graph',
      priority: 'INFO',
      envelopeVersion: 2,
      collectorTimestamp: `${(msg['timestamp'] as string).replace(' ', 'T')}Z`,
    }
    for (const [k, v] of Object.entries(expected)) {
      if ((r.right as unknown as Record<string, unknown>)[k] !== v) problems.push(`${i}: ${k}`)
    }
  })
  t.equal(captured.length, 400)
  t.same(problems, [])
})

t.test('a v1 body (the bare message) is accepted', async (t) => {
  const body = JSON.stringify(message())
  const r = decodeMessage(Buffer.from(body), options)
  t.ok(E.isRight(r))
  if (E.isRight(r)) {
    t.equal(r.right.envelopeVersion, 1)
    t.equal(r.right.messageText, body)
  }
})

t.test('collector_timestamp is vitrage_sample_date when the payload has one', async (t) => {
  const r = decodeMessage(v2(message({ payload: { vitrage_sample_date: '2015-12-01T12:46:41Z' } })), options)
  t.equal(E.isRight(r) && r.right.collectorTimestamp, '2015-12-01T12:46:41.000000Z')
})

t.test('message_id is normalised to lower case', async (t) => {
  const r = decodeMessage(v2(message({ message_id: '0C3D5DF6-975A-4279-B48A-FFCE4BCB99F7' })), options)
  t.equal(E.isRight(r) && r.right.messageId, '0c3d5df6-975a-4279-b48a-ffce4bcb99f7')
})

t.test('a message encoded as replay encodes it decodes to the same message text (payload numbers kept verbatim) and a null publisher_id', async (t) => {
  const text = encodeMessageText(
    { messageId: '0c3d5df6-975a-4279-b48a-ffce4bcb99f7', eventType: 'x.y', publisherId: null, priority: 'INFO', timestamp: '2024-01-01 00:00:00' },
    '{"n": 1e400, "big": 1234567890123456789012345678901234567890}',
  )
  const r = decodeMessage(Buffer.from(encodeEnvelopeV2(text)), options)
  t.ok(E.isRight(r))
  if (E.isRight(r)) {
    t.equal(r.right.messageText, text, 'payload text kept exactly, numbers included')
    t.equal(r.right.publisherId, null)
  }
})

t.test('each kind of bad input is rejected with its own reason', async (t) => {
  const cases: Array<[string, Uint8Array, RejectionReason]> = [
    ['not JSON', Buffer.from('hello'), 'invalid-json'],
    ['not UTF-8', Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), 'invalid-utf8'],
    ['a JSON array', Buffer.from('[1,2]'), 'invalid-envelope'],
    ['envelope without oslo.message', Buffer.from('{"oslo.version": "2.0"}'), 'invalid-envelope'],
    ['oslo.message not a string', Buffer.from('{"oslo.version": "2.0", "oslo.message": {"a": 1}}'), 'invalid-envelope'],
    ['oslo.message not JSON', v2('{not json'), 'invalid-message-json'],
    ['oslo.message a JSON string', v2('"text"'), 'invalid-envelope'],
    ['missing event_type', v2(message({ event_type: undefined })), 'missing-event-type'],
    ['numeric event_type', v2(message({ event_type: 42 })), 'invalid-event-type'],
    ['empty event_type', v2(message({ event_type: '' })), 'invalid-event-type'],
    ['missing message_id', v2(message({ message_id: undefined })), 'missing-message-id'],
    ['message_id not a UUID', v2(message({ message_id: 'abc' })), 'invalid-message-id'],
    ['payload a list', v2(message({ payload: [1] })), 'invalid-payload'],
    ['payload a string', v2(message({ payload: 'x' })), 'invalid-payload'],
    ['payload missing', v2(message({ payload: undefined })), 'invalid-payload'],
    ['publisher_id a number', v2(message({ publisher_id: 7 })), 'invalid-field'],
    ['unparseable timestamp', v2(message({ timestamp: 'yesterday' })), 'invalid-timestamp'],
    ['missing timestamp', v2(message({ timestamp: undefined })), 'invalid-timestamp'],
    ['unparseable vitrage_sample_date', v2(message({ payload: { vitrage_sample_date: 'soon' } })), 'invalid-timestamp'],
    ['\\u0000 in a payload string', v2(JSON.stringify(message()).replace('"a1"', '"a\\u0000"')), 'unsupported-json'],
    ['lone surrogate escape', v2(JSON.stringify(message()).replace('"a1"', '"\\ud800"')), 'unsupported-json'],
    ['lone surrogate in the inner text itself', v2(JSON.stringify(message()).replace('"a1"', '"\ud800"')), 'unsupported-json'],
  ]
  for (const [name, body, reason] of cases) t.equal(reasonOf(body), reason, name)
  t.equal(reasonOf(v2(message()), { maxMessageBytes: 10 }), 'body-too-large', 'body over the limit')
})

t.test('escaped backslashes and surrogate pairs are not mistaken for unsupported escapes', async (t) => {
  t.equal(reasonOf(v2(JSON.stringify(message()).replace('"a1"', '"a\\\\u0000"'))), 'ok', 'literal backslash-u0000')
  t.equal(reasonOf(v2(JSON.stringify(message()).replace('"a1"', '"\\ud83d\\ude00"'))), 'ok', 'escaped pair')
  t.equal(reasonOf(v2(JSON.stringify(message({ payload: { s: '😀' } })))), 'ok', 'raw astral character')
})

t.test('a payload nested deeper than MAX_PAYLOAD_DEPTH is unsupported-json; one at the limit, or brackets inside strings, pass', async (t) => {
  const nested = (depth: number): string => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`
  // The payload object is level 1.
  const at = (depth: number): Buffer => v2(JSON.stringify(message({ payload: 0 })).replace('"payload":0', `"payload":${nested(depth)}`))
  t.equal(reasonOf(at(MAX_PAYLOAD_DEPTH)), 'ok', 'at the limit')
  const over = decodeMessage(at(MAX_PAYLOAD_DEPTH + 1), options)
  t.match(over, E.left({ reason: 'unsupported-json', detail: `"payload" nests objects and arrays deeper than ${MAX_PAYLOAD_DEPTH} levels` }))
  t.equal(reasonOf(v2(message({ payload: { s: '{['.repeat(5_000), list: Array.from({ length: 2_000 }, () => [{}]) } }))), 'ok', 'many brackets, shallow: stored')
  t.equal(reasonOf(v2(JSON.stringify(message({ payload: 0 })).replace('"payload":0', `"payload":{"deep":${'['.repeat(200_000)}${']'.repeat(200_000)}}`))), 'unsupported-json', 'arrays count as well, far past the stack')
})
