import { readFileSync } from 'node:fs'
import t from 'tap'
import { memberText } from './json-span.js'

const fixture = new URL('../../../test/fixtures/vitrage-seed7-400.raw.jsonl', import.meta.url)

t.test('the payload text of every captured message parses to the parsed payload', async (t) => {
  const bad: number[] = []
  readFileSync(fixture, 'utf8')
    .trim()
    .split('\n')
    .forEach((line, i) => {
      const inner = (JSON.parse((JSON.parse(line) as { body: string }).body) as Record<string, string>)['oslo.message'] as string
      const span = memberText(inner, 'payload')
      if (span === undefined || JSON.stringify(JSON.parse(span)) !== JSON.stringify((JSON.parse(inner) as { payload: unknown }).payload)) bad.push(i)
    })
  t.same(bad, [])
})

t.test('exact text is kept: numbers, escapes, whitespace inside the value', async (t) => {
  t.equal(memberText('{"a": 1, "payload": {"n": 1e400, "s": "x\\"}\\\\"} , "z": [1]}', 'payload'), '{"n": 1e400, "s": "x\\"}\\\\"}')
  t.equal(memberText('{"payload":12345678901234567890123}', 'payload'), '12345678901234567890123')
  t.equal(memberText(' {\n "payload" :\t[ {"}": "]"} ] }', 'payload'), '[ {"}": "]"} ]')
  // Runs of backslashes before a quote: even, the quote ends the string; odd, it is escaped.
  const tricky = { payload: { a: 'x\\', b: 'y\\\\', c: 'z\\"', d: '\\"}\\', e: '"' }, after: '\\' }
  t.equal(memberText(JSON.stringify(tricky), 'payload'), JSON.stringify(tricky.payload))
  t.equal(memberText(JSON.stringify(tricky), 'after'), JSON.stringify(tricky.after))
})

t.test('nested members of the same name are not confused with the top-level one', async (t) => {
  t.equal(memberText('{"x": {"payload": 1}, "payload": {"payload": 2}}', 'payload'), '{"payload": 2}')
  t.equal(memberText('{"x": {"payload": 1}}', 'payload'), undefined)
})

t.test('like JSON.parse and jsonb, the last duplicate key wins; escaped key names match', async (t) => {
  t.equal(memberText('{"payload": 1, "payload": 2}', 'payload'), '2')
  t.equal(memberText('{"pay\\u006coad": true}', 'payload'), 'true')
})

t.test('non-objects have no members', async (t) => {
  t.equal(memberText('[1, 2]', 'payload'), undefined)
  t.equal(memberText('"payload"', 'payload'), undefined)
  t.equal(memberText('{}', 'payload'), undefined)
})

t.test('agrees with JSON.parse on generated documents', async (t) => {
  let seed = 7
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    return seed / 2 ** 31
  }
  const value = (depth: number): unknown => {
    const r = rnd()
    if (depth > 3 || r < 0.3) return [1.5e300, -0, 'a"b\\c}]{[', true, null, 'é😀'][Math.floor(rnd() * 6)]
    if (r < 0.6) return Array.from({ length: Math.floor(rnd() * 4) }, () => value(depth + 1))
    return Object.fromEntries(Array.from({ length: Math.floor(rnd() * 4) }, (_, k) => [['payload', 'k', '"', '}'][k % 4] as string, value(depth + 1)]))
  }
  let mismatches = 0
  for (let n = 0; n < 500; n++) {
    const doc = { a: value(0), payload: value(0), z: value(0) }
    const text = JSON.stringify(doc, null, n % 2 === 0 ? undefined : 2)
    const span = memberText(text, 'payload')
    if (span === undefined || JSON.stringify(JSON.parse(span)) !== JSON.stringify(doc.payload)) mismatches++
  }
  t.equal(mismatches, 0)
})
