import type { RawEvent } from '@vitrage-persistor/core'
import t from 'tap'
import { eventJsonLine, eventTableHeader, eventTableLine } from './events.js'

const event = (over: Partial<RawEvent> = {}): RawEvent => ({
  id: 42,
  messageId: '0b7f6f2e-6f0b-4a55-9a54-3c1a43f0e8a1',
  eventType: 'vitrage.graph.change',
  publisherId: 'vitrage-graph.host',
  priority: 'INFO',
  collectorTimestamp: '2024-01-04T10:30:00.000000Z',
  persistedAt: '2024-01-04T10:30:01.000000Z',
  payloadText: '{"n": 12345678901234567890123, "s": "a\\nb"}',
  ...over,
})

t.test('a JSON line is one line, the payload spliced in exactly as stored', async (t) => {
  const line = eventJsonLine(event())
  t.equal(line.indexOf('\n'), line.length - 1, 'one line')
  t.match(line, /"payload":\{"n": 12345678901234567890123, "s": "a\\nb"\}\}\n$/, 'the number is not rounded through JavaScript')
  t.same(JSON.parse(line), {
    id: 42,
    message_id: '0b7f6f2e-6f0b-4a55-9a54-3c1a43f0e8a1',
    event_type: 'vitrage.graph.change',
    publisher_id: 'vitrage-graph.host',
    priority: 'INFO',
    collector_timestamp: '2024-01-04T10:30:00.000000Z',
    persisted_at: '2024-01-04T10:30:01.000000Z',
    payload: { n: 12345678901234567890123, s: 'a\nb' },
  })
  t.same(JSON.parse(eventJsonLine(event({ publisherId: null, priority: null }))).publisher_id, null)
})

t.test('a table line keeps its columns: controls escaped, a long payload cut', async (t) => {
  const line = eventTableLine(event({ eventType: 'x\ny\u202e', payloadText: `{"k": "${'v'.repeat(200)}"}` }), 5)
  t.equal(line.split('\n').length, 2, 'one line')
  t.match(line, /^ {3}42 {2}2024-01-04T10:30:00\.000000Z {2}x\\ny\\u202e +0b7f6f2e-6f0b-4a55-9a54-3c1a43f0e8a1 {2}\{"k": "v+…\n$/)
  t.equal(line.slice(line.indexOf('{"k"')).length, 81, 'the payload preview: 80 characters')
  t.equal(eventTableHeader(5).indexOf('collector_timestamp'), line.indexOf('2024-'), 'the header over its column')
})

t.test('the payload preview does not cut a surrogate pair in two', async (t) => {
  const line = eventTableLine(event({ payloadText: `{"k": "${'v'.repeat(71)}😀😀😀😀"}` }), 2)
  t.notOk(line.includes('\ufffd'), 'no replacement character')
  t.ok(line.isWellFormed(), 'well-formed text')
  t.match(line, /"v+…\n$/, "cut before the pair")
})
