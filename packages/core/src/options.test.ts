import t from 'tap'
import { requireNonNegativeInts, requirePositiveInts } from './options.js'

t.test('numeric options: zero, negative, fractional or non-numbers are refused by name; undefined is left to defaults', async (t) => {
  t.doesNotThrow(() => requirePositiveInts('f', { a: 1, b: undefined }))
  for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '3']) {
    t.throws(() => requirePositiveInts('republish', { maxInFlight: bad }), { name: 'TypeError', message: /^republish: maxInFlight must be an integer >= 1, got / })
  }
  t.doesNotThrow(() => requireNonNegativeInts('g', { fromId: 0 }))
  t.throws(() => requireNonNegativeInts('graphAt', { eventId: -5 }), { message: 'graphAt: eventId must be an integer >= 0, got -5' })
})
