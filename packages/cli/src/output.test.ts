import t from 'tap'
import { UsageError } from './command.js'
import { timestampArg } from './output.js'

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
