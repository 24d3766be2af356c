import { parseTimestamp } from '@vitrage-persistor/core'
import { testDatabaseClient } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { schemaTemplate } from './migrate.js'

/** history_timestamp of each text, as canonical UTC text (null where it does not answer). */
const inDatabase = async (c: Awaited<ReturnType<typeof testDatabaseClient>>, texts: readonly string[]): Promise<Array<string | null>> =>
  (
    await c.query<{ iso: string | null }>(
      `SELECT to_char(history_timestamp(t) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS iso FROM unnest($1::text[]) WITH ORDINALITY AS x(t, n) ORDER BY n`,
      [texts],
    )
  ).rows.map((r) => r.iso)

// A deterministic generator, so a failure names a text that fails again.
const random = (seed: number): (() => number) => {
  let s = seed
  return () => {
    s = (s * 16807) % 2147483647
    return s / 2147483647
  }
}

t.test('history_timestamp answers only where it agrees with parseTimestamp, never raises', async (t) => {
  const c = await testDatabaseClient(t, schemaTemplate)
  const edges = [
    '2024-01-01T00:00:08Z', '2024-01-01 00:03:45.356815', '2024-01-01 00:03:45', '2024-01-01T00:03:45.3Z',
    '2024-02-29 10:00:00', '2023-02-29 10:00:00', '2100-02-29T00:00:00Z', '2000-02-29T00:00:00Z', '2024-04-31T00:00:00Z', '2024-04-30T23:59:59Z',
    '2024-12-31T23:59:59.999999Z', '2024-13-01T00:00:00Z', '2024-00-10T00:00:00Z', '2024-01-00T00:00:00Z', '2024-01-32T00:00:00Z',
    '2024-01-01T24:00:00Z', '2024-01-01T23:60:00Z', '2024-01-01T23:59:60Z', '2024-01-01T00:00:08.1234567Z', '2024-01-01T00:00:08.123456789Z',
    '2024-01-01T00:00:08+02:00', '2024-01-01T00:00:08-0130', '2024-01-01T00:00:08z', ' 2024-01-01T00:00:08Z', '2024-01-01T00:00:08Z ',
    '0999-01-01T00:00:00Z', '1000-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '0000-01-01T00:00:00Z', '2024-1-01T00:00:00Z',
    '2024-01-01', 'soon', '', '2024-01-01T00:00:08.Z', '2024-01-01X00:00:08Z', '20240101T000008Z', '2024-01-01T00:00:08ZZ',
  ]
  const rnd = random(42)
  const pick = (n: number): string => String(Math.floor(rnd() * n))
  const two = (n: number): string => pick(n).padStart(2, '0')
  const generated = Array.from({ length: 3000 }, () => {
    const date = `${1990 + Number(pick(120))}-${two(14)}-${two(33)}`
    const time = `${two(26)}:${two(62)}:${two(62)}`
    const fraction = rnd() < 0.5 ? '' : `.${pick(1e9).slice(0, 1 + Number(pick(9)))}`
    const zone = ['', 'Z', 'z', '+01:00', '-0230'][Number(pick(5))]
    return `${date}${rnd() < 0.5 ? 'T' : ' '}${time}${fraction}${zone}`
  })
  const texts = [...edges, ...generated]
  const answers = await inDatabase(c, texts)
  let answered = 0
  const disagreements: string[] = []
  texts.forEach((text, i) => {
    const sql = answers[i]
    if (sql === null || sql === undefined) return
    answered++
    const js = parseTimestamp(text)
    if (E.isLeft(js) || js.right.iso !== sql) disagreements.push(`${JSON.stringify(text)}: database ${sql}, parseTimestamp ${E.isLeft(js) ? js.left : js.right.iso}`)
  })
  t.same(disagreements, [], 'no text gets another instant, or one parseTimestamp refuses')
  t.ok(answered > 500, `the database answers for a good share of them (${answered} of ${texts.length})`)

  const refused = ['2023-02-29 10:00:00', '2024-04-31T00:00:00Z', '2024-01-01T23:59:60Z', '2024-01-01T00:00:08.1234567Z', '2024-01-01T00:00:08+02:00', '0999-01-01T00:00:00Z']
  t.same(await inDatabase(c, refused), refused.map(() => null), 'impossible dates, longer fractions, offsets and years before 1000 go to parseTimestamp')
})

t.test('history_timestamp answers for every timestamp in the forms Vitrage writes', async (t) => {
  const c = await testDatabaseClient(t, schemaTemplate)
  const rnd = random(7)
  const texts = Array.from({ length: 2000 }, (_, i) => {
    const d = new Date(Date.UTC(2000, 0, 1) + Math.floor(rnd() * 40 * 365 * 86_400_000))
    const micros = String(Math.floor(rnd() * 1e6)).padStart(6, '0')
    // Vitrage's update_timestamp (ISO with Z, whole seconds) and oslo's naive UTC with microseconds.
    return i % 2 === 0 ? `${d.toISOString().slice(0, 19)}Z` : `${d.toISOString().slice(0, 19).replace('T', ' ')}.${micros}`
  })
  const answers = await inDatabase(c, texts)
  const missed = texts.filter((_, i) => answers[i] === null)
  t.same(missed, [], 'none is left to the slower path')
  t.same(answers, texts.map((text) => E.getOrElseW(() => null)(E.map((p: { iso: string }) => p.iso)(parseTimestamp(text)))))
})
