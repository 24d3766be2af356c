import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { formatOsloTimestamp, parseTimeArgument, parseTimestamp } from './timestamp.js'

const iso = (text: string): string => {
  const r = parseTimestamp(text)
  if (E.isLeft(r)) throw new Error(r.left)
  return r.right.iso
}

t.test('oslo naive UTC with and without fraction', async (t) => {
  t.equal(iso('2026-11-25 14:37:33.821020'), '2026-11-25T14:37:33.821020Z')
  t.equal(iso('2026-11-25 14:37:33'), '2026-11-25T14:37:33.000000Z')
})

t.test('Vitrage ISO forms with Z, offsets and short or long fractions', async (t) => {
  t.equal(iso('2024-01-01T00:00:08Z'), '2024-01-01T00:00:08.000000Z')
  t.equal(iso('2024-01-01 00:03:45.356815'), '2024-01-01T00:03:45.356815Z')
  t.equal(iso('2024-01-01T00:00:08.5Z'), '2024-01-01T00:00:08.500000Z')
  t.equal(iso('2024-01-01T00:00:08.123456789Z'), '2024-01-01T00:00:08.123456Z')
  t.equal(iso('2024-01-01T02:30:00+02:30'), '2024-01-01T00:00:00.000000Z')
  t.equal(iso('2024-01-01T00:00:00-0100'), '2024-01-01T01:00:00.000000Z')
  t.equal(iso('2023-12-31T23:30:00-01'), '2024-01-01T00:30:00.000000Z')
})

t.test('epochMs agrees with Date for millisecond values', async (t) => {
  const r = parseTimestamp('2024-02-29 12:34:56.789123')
  t.ok(E.isRight(r))
  if (E.isRight(r)) {
    t.equal(r.right.epochMs, Date.parse('2024-02-29T12:34:56.789Z'))
    t.equal(r.right.micros, 789123)
  }
})

t.test('UTC (the fast path), an offset of zero and a real offset agree with Date, at random instants', async (t) => {
  let seed = 11
  const rnd = (): number => (seed = (seed * 16807) % 2147483647) / 2147483647
  const d2 = (n: number): string => String(n).padStart(2, '0')
  for (let i = 0; i < 2_000; i++) {
    const ms = Math.floor(rnd() * Date.UTC(2200, 0, 1))
    const micros = Math.floor(rnd() * 1_000_000)
    const date = new Date(ms)
    const fields = `${date.getUTCFullYear()}-${d2(date.getUTCMonth() + 1)}-${d2(date.getUTCDate())}T${d2(date.getUTCHours())}:${d2(date.getUTCMinutes())}:${d2(date.getUTCSeconds())}`
    const want = `${fields}.${String(micros).padStart(6, '0')}Z`
    const wantMs = Math.floor(ms / 1000) * 1000 + Math.floor(micros / 1000)
    const shifted = new Date(ms + 90 * 60_000) // the same instant written at +01:30
    const local = `${shifted.getUTCFullYear()}-${d2(shifted.getUTCMonth() + 1)}-${d2(shifted.getUTCDate())} ${d2(shifted.getUTCHours())}:${d2(shifted.getUTCMinutes())}:${d2(shifted.getUTCSeconds())}`
    for (const text of [want, `${fields.replace('T', ' ')}.${String(micros).padStart(6, '0')}`, `${fields}.${String(micros).padStart(6, '0')}+00:00`, `${local}.${String(micros).padStart(6, '0')}+01:30`]) {
      const r = parseTimestamp(text)
      if (E.isLeft(r) || r.right.iso !== want || r.right.epochMs !== wantMs || r.right.micros !== micros) {
        t.fail(`${text}: ${JSON.stringify(r)}, expected ${want} / ${wantMs}`)
        return
      }
    }
  }
  t.pass('8,000 timestamps')
})

t.test('rejects what is not a real calendar time', async (t) => {
  for (const bad of ['', 'yesterday', '2024-13-01 00:00:00', '2023-02-29 00:00:00', '2024-01-01 24:00:00',
    '2024-01-01', '2024-01-01T00:00:00+25:00', '1704067200', '2024-01-01 00:00:00.']) {
    t.ok(E.isLeft(parseTimestamp(bad)), `rejects ${JSON.stringify(bad)}`)
  }
})

t.test('nothing before the year 1 in UTC, which PostgreSQL cannot store; the year 1 itself is fine', async (t) => {
  for (const bad of ['0000-01-01T00:00:00Z', '0000-06-15 12:00:00', '0001-01-01T00:30:00+01:00']) {
    t.match(parseTimestamp(bad), E.left(/before the year 1/), `rejects ${JSON.stringify(bad)}`)
  }
  t.equal(iso('0001-01-01T00:00:00Z'), '0001-01-01T00:00:00.000000Z')
  t.equal(iso('0099-06-01 00:00:00'), '0099-06-01T00:00:00.000000Z')
})

t.test('formats back to oslo form, dropping a zero fraction as Python does', async (t) => {
  t.equal(formatOsloTimestamp('2024-01-01T00:00:08.000000Z'), '2024-01-01 00:00:08')
  t.equal(formatOsloTimestamp('2024-01-01T00:00:08.000100Z'), '2024-01-01 00:00:08.000100')
})

t.test('a time asked about: a bare date is its midnight, a time without seconds second 0, no zone UTC; words are refused', async (t) => {
  t.same(parseTimeArgument('2024-01-01'), E.right('2024-01-01T00:00:00.000000Z'))
  t.same(parseTimeArgument(' 2024-01-01 00:05 '), E.right('2024-01-01T00:05:00.000000Z'))
  t.same(parseTimeArgument('2024-01-01T00:05+02:00'), E.right('2023-12-31T22:05:00.000000Z'))
  t.same(parseTimeArgument('2024-01-01T00:05:07.5Z'), E.right('2024-01-01T00:05:07.500000Z'))
  for (const bad of ['yesterday', 'now', 'infinity', 'epoch', '11/25/2026 10:00', '2024-01-01 00:05 PST', '2024-13-01']) {
    t.ok(E.isLeft(parseTimeArgument(bad)), bad)
  }
})

t.test('a time asked about takes every zone form parseTimestamp does, also without seconds; its refusal names the forms it takes', async (t) => {
  for (const [text, iso] of [
    ['2024-01-01T00:05+02', '2023-12-31T22:05:00.000000Z'],
    ['2024-01-01T00:05+0530', '2023-12-31T18:35:00.000000Z'],
    ['2024-01-01T00:05z', '2024-01-01T00:05:00.000000Z'],
    ['2024-01-01 00:05:07.123456789Z', '2024-01-01T00:05:07.123456Z'],
  ] as const) t.same(parseTimeArgument(text), E.right(iso), text)
  t.match(parseTimeArgument('yesterday'), E.left(/^"yesterday" is not a timestamp \(expected YYYY-MM-DD, or YYYY-MM-DD\[T \]HH:MM\[:SS\[\.ffffff\]\] with Z/))
  t.match(parseTimeArgument('2024-02-30'), E.left(/not a valid calendar date/), 'a well-formed impossible date says that')
})
