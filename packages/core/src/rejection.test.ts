import t from 'tap'
import { pastPrunedHistory } from './rejection.js'

t.test('a message at or before the newest pruned event is refused as pruned-history; a later one, or any while nothing was pruned, passes', async (t) => {
  const through = '2024-01-01T00:00:30.123456Z'
  t.match(pastPrunedHistory('2024-01-01T00:00:30.123456Z', through), { reason: 'pruned-history', detail: /at or before the pruned part of the log \(through 2024-01-01T00:00:30\.123456Z\)/ })
  t.match(pastPrunedHistory('2023-12-31T23:59:59.000000Z', through), { reason: 'pruned-history' })
  t.equal(pastPrunedHistory('2024-01-01T00:00:30.123457Z', through), undefined, 'a microsecond later')
  t.equal(pastPrunedHistory('0999-01-01T00:00:00.000000Z', null), undefined, 'nothing pruned')
  t.match(pastPrunedHistory('0999-01-01T00:00:00.000000Z', through), { reason: 'pruned-history' }, 'years before 1000 compare as text too (four digits)')
})
