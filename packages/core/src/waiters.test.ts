import t from 'tap'
import { waiters } from './waiters.js'

t.test('a wait resolves at the check after its condition holds, times out with its own text, or is abandoned', async (t) => {
  const w = waiters()
  let n = 0
  const texts = (want: number) => ({ timedOut: () => `not ${want} (at ${n})`, abandoned: (why: string) => `${why} before ${want}` })
  await w.wait(() => n >= 0, texts(0))
  const three = w.wait(() => n >= 3, texts(3))
  const late = t.rejects(w.wait(() => n >= 9, { ...texts(9), timeoutMs: 20 }), { name: 'TimeoutError', message: 'not 9 (at 3)' })
  const never = t.rejects(w.wait(() => n >= 99, texts(99)), { message: 'closed before 99' })
  n = 3
  w.check()
  await three
  await late
  w.abandon('closed')
  await never
})
