import t from 'tap'
import { progressLine, startProgress } from './progress.js'

t.test('the line shows fraction, counts, rate and ETA', async (t) => {
  const { bar, plain } = progressLine('replaying', 250, 1000, 1000, 10)
  t.equal(bar, 'replaying [###.......] 25.0% 250/1,000 250/s ETA 3s')
  t.equal(plain, 'replaying: 25.0% 250/1,000 250/s ETA 3s')
  t.match(progressLine('x', 0, 10, 0).plain, /ETA \?/)
  t.equal(progressLine('r', 5, 10, 1000, 10, 'confirmed up to event 4 (resume with --from-id 5)').plain, 'r: 50.0% 5/10 5/s ETA 1s; confirmed up to event 4 (resume with --from-id 5)')
  t.match(progressLine('x', 10, 100_000, 1000).plain, /ETA 2h|ETA 2\.8h/)
})

t.test('a terminal gets a redrawn bar, a log gets a plain line every five seconds', async (t) => {
  let now = 0
  const tty: string[] = []
  const bar = startProgress({ out: () => {}, err: (s) => void tty.push(s), isTTY: true, errIsTTY: true }, 'r', () => now)
  for (now = 0; now <= 1000; now += 50) bar.update(now, 1000)
  bar.finish()
  t.ok(tty.length >= 10 && tty.length <= 13, `redrawn about ten times a second (${tty.length})`)
  t.ok(tty.slice(0, -1).every((s) => s.startsWith('\r')))
  const log: string[] = []
  now = 0
  const plain = startProgress({ out: () => {}, err: (s) => void log.push(s), isTTY: false, errIsTTY: false }, 'r', () => now)
  for (now = 0; now <= 12_000; now += 100) plain.update(now, 12_000)
  plain.finish()
  t.same(log.length, 3, 'at 5 and 10 s, and at the end')
  t.ok(log.every((s) => s.endsWith('\n') && !s.includes('\r')))
})

t.test('finish prints its last line once, and none when there was nothing to do', async (t) => {
  // A real clock: epoch milliseconds.
  let now = 1_780_000_000_000
  const log: string[] = []
  const io = { out: () => {}, err: (s: string) => void log.push(s), isTTY: false, errIsTTY: false }
  const p = startProgress(io, 'r', () => now)
  p.update(5, 10)
  now += 2_000
  p.update(10, 10)
  p.finish()
  p.finish()
  t.same(log, ['r: 100.0% 10/10 5/s ETA 0s\n'], 'one final line')
  log.length = 0
  const empty = startProgress(io, 'r', () => now)
  now += 5_000
  empty.update(0, 0)
  empty.finish()
  t.same(log, [], 'a replay of nothing says nothing')
})
