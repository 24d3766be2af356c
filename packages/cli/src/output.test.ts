import t from 'tap'
import { UsageError } from './command.js'
import { eventIdArg, positiveIntArg, printTable, timestampArg } from './output.js'

t.test('time flags: what Vitrage writes, a bare date, a time without seconds, offsets; anything else is a usage error', async (t) => {
  t.equal(timestampArg('--at', '2024-01-04T00:00:08Z'), '2024-01-04T00:00:08.000000Z')
  t.equal(timestampArg('--at', '2024-01-04 00:03:45.356815'), '2024-01-04T00:03:45.356815Z')
  t.equal(timestampArg('--at', '2024-01-04'), '2024-01-04T00:00:00.000000Z')
  t.equal(timestampArg('--at', '2024-01-04T10:30Z'), '2024-01-04T10:30:00.000000Z')
  t.equal(timestampArg('--at', '2024-01-04 10:30'), '2024-01-04T10:30:00.000000Z')
  t.equal(timestampArg('--at', '2024-01-04T10:30+02:00'), '2024-01-04T08:30:00.000000Z')
  t.equal(timestampArg('--at', undefined), undefined)
  t.throws(() => timestampArg('--at', 'yesterday'), UsageError)
  t.throws(() => timestampArg('--at', '2024-01-04T10Z'), UsageError)
  t.throws(() => timestampArg('--at', '2024-02-30'), UsageError)
})

const captured = (): { io: { out: (s: string) => void; err: (s: string) => void; isTTY: boolean }; text: () => string } => {
  let text = ''
  return { io: { out: (s) => (text += s), err: () => {}, isTTY: true }, text: () => text }
}

t.test('a table of 200,000 rows is printed (column widths without one argument per row)', async (t) => {
  const rows = Array.from({ length: 200_000 }, (_, i) => ({ id: `a${i}`, n: i }))
  const { io, text } = captured()
  printTable(io, ['id', 'n'], rows)
  const lines = text().split('\n')
  t.equal(lines.length, 200_002, 'header, rows and the final newline')
  t.equal(lines[1], 'a0       0')
  t.equal(lines[200_000], 'a199999  199999')
})

t.test('a table cell cannot break its row: control characters are escaped, null shows as -', async (t) => {
  const { io, text } = captured()
  printTable(io, ['name', 'note'], [{ name: 'two\nlines', note: null }, { name: 'tab\there\u0001', note: 'ok' }])
  t.equal(text(), 'name             note\ntwo\\nlines       -\ntab\\there\\u0001  ok\n')
})

t.test('C1 controls, line separators and bidirectional overrides are escaped too', async (t) => {
  const { io, text } = captured()
  printTable(io, ['v'], [{ v: 'csi\u009b2J' }, { v: 'a\u2028b\u2029c' }, { v: 'user\u202etxt.exe\u2066' }])
  t.equal(text(), 'v\ncsi\\u009b2J\na\\u2028b\\u2029c\nuser\\u202etxt.exe\\u2066\n')
})

t.test('numeric flags take plain decimal digits only: not empty, hex, exponent or past 2^53', async (t) => {
  t.equal(positiveIntArg('--limit', '25'), 25)
  t.equal(eventIdArg('--at-event', '0'), 0)
  t.equal(eventIdArg('--at-event', undefined), undefined)
  for (const bad of ['', ' ', '0x10', '1e2', '-1', '1.5', '9007199254740993', 'ten']) {
    t.throws(() => eventIdArg('--at-event', bad), { name: 'UsageError', message: `--at-event: must be a whole number, got ${JSON.stringify(bad)}` }, JSON.stringify(bad))
  }
  t.throws(() => positiveIntArg('--limit', '0'), { message: '--limit: must be a positive integer, got "0"' })
})
