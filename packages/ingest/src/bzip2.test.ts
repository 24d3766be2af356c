import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import t from 'tap'
import { Bzip2Error, bunzip2 } from './bzip2.js'

// The reference: Python's bz2 (libbzip2), which kombu compresses with.
const PYTHON = '/usr/bin/python3'
const skip = existsSync(PYTHON) ? false : `${PYTHON} (Python's bz2, the reference) is not installed`
const compress = (data: Buffer, level = 9): Buffer =>
  execFileSync(PYTHON, ['-c', `import bz2, sys; sys.stdout.buffer.write(bz2.compress(sys.stdin.buffer.read(), ${level}))`], { input: data, maxBuffer: 1 << 28 })

// Deterministic bytes: a linear congruential generator, so a failure can be run again.
const bytes = (n: number, seed: number, alphabet = 256): Buffer => {
  const out = Buffer.alloc(n)
  let x = seed
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    out[i] = (x >>> 16) % alphabet
  }
  return out
}

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), b) === 0

t.test('decodes what libbzip2 writes: empty, runs of every length around 4, all 256 bytes, text, random bytes, several blocks, every level', { skip }, async (t) => {
  const runs = Buffer.concat(Array.from({ length: 300 }, (_, i) => Buffer.alloc(i % 260, i % 256)))
  const cases: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['one byte', Buffer.from('a')],
    ...[3, 4, 5, 8, 259, 260, 261].map((n): [string, Buffer] => [`a run of ${n}`, Buffer.alloc(n, 0x61)]),
    ['runs of 0 to 259 of each byte', runs],
    ['all 256 bytes', Buffer.from(Array.from({ length: 256 }, (_, i) => i))],
    ['a notification, repeated', Buffer.from(JSON.stringify({ event_type: 'vitrage.graph.change', payload: { vitrage_id: 'x'.repeat(40), state: 'ACTIVE' } }).repeat(200))],
    ['random bytes', bytes(20_000, 1)],
    ['random bytes of 3 values (long runs of RUNA/RUNB)', bytes(50_000, 2, 3)],
    ['a million zeros', Buffer.alloc(1_000_000)],
  ]
  for (const [name, data] of cases) {
    for (const level of [1, 9]) t.ok(same(bunzip2(compress(data, level), 1 << 26), data), `${name}, level ${level}`)
  }
  // Three blocks at level 1 (100,000 bytes each), the last short.
  const large = bytes(250_000, 3, 40)
  for (const level of [1, 2, 5, 9]) t.ok(same(bunzip2(compress(large, level), 1 << 26), large), `250,000 bytes, level ${level}`)
})

t.test('streams one after another decode to the bytes of both, as Python reads them', { skip }, async (t) => {
  const a = Buffer.from('first stream; ')
  const b = bytes(5_000, 4, 10)
  t.ok(same(bunzip2(Buffer.concat([compress(a), compress(b, 3)]), 1 << 20), Buffer.concat([a, b])))
})

t.test('output is bounded: past maxBytes is Bzip2TooLarge as soon as it would pass, exactly maxBytes decodes', { skip }, async (t) => {
  const zeros = compress(Buffer.alloc(10_000_000))
  t.ok(zeros.byteLength < 1_000, `10 MB of zeros in ${zeros.byteLength} bytes`)
  t.throws(() => bunzip2(zeros, 1_000), { name: 'Bzip2TooLarge' })
  t.throws(() => bunzip2(zeros, 9_999_999), { name: 'Bzip2TooLarge' })
  t.equal(bunzip2(zeros, 10_000_000).byteLength, 10_000_000)
  // Runs of exactly four: a block holds five entries for four bytes (review 65: refused below 600,000).
  const fours = Buffer.from('aaaab'.repeat(100_000))
  t.ok(same(bunzip2(compress(fours), fours.byteLength), fours), 'exactly the limit, with runs of four')
  t.throws(() => bunzip2(compress(fours), fours.byteLength - 1), { name: 'Bzip2TooLarge' })
  const indented = Buffer.from(JSON.stringify(Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`key${i}`, i])), null, 4))
  t.ok(same(bunzip2(compress(indented), indented.byteLength), indented), 'exactly the limit, indented JSON')
})

t.test('anything else is a Bzip2Error, never a throw of another kind or a hang: not bzip2, trailing bytes, a run without its count, every truncation, random corruption', { skip }, async (t) => {
  const data = bytes(3_000, 5, 20)
  const z = compress(data)
  const fails = (input: Buffer): boolean => {
    try {
      bunzip2(input, 1 << 20)
      return false
    } catch (e) {
      if (e instanceof Bzip2Error) return true
      throw e
    }
  }
  t.ok(fails(Buffer.from('{"oslo.version": "2.0"}')), 'not bzip2')
  t.ok(fails(Buffer.concat([z, Buffer.from('x')])), 'a byte after the stream')
  t.ok(fails(Buffer.from('BZh0')), 'level 0')
  // A block ending in four equal bytes without their count, CRCs right (review 65): libbzip2
  // refuses it; alone, or after a valid stream (where Python drops it and we returned more).
  const fourAtEnd = Buffer.from('425a6839314159265359cf925eba000002018020000040200021008283177245385090cf925eba', 'hex')
  t.ok(fails(fourAtEnd), 'four equal bytes at the end of a block')
  t.ok(fails(Buffer.concat([compress(Buffer.from('hello')), fourAtEnd])), 'the same after a valid stream')
  let truncations = 0
  for (let n = 0; n < z.byteLength; n++) if (fails(z.subarray(0, n))) truncations++
  t.equal(truncations, z.byteLength, 'every truncation fails')
  // One byte changed anywhere: a checksum, a table or a bound says so; or (a change in the
  // padding bits of the last byte) the same bytes.
  let corrupted = 0
  let unchanged = 0
  const seeds = bytes(4_000, 6)
  for (let i = 0; i < 2_000; i++) {
    const broken = Buffer.from(z)
    const at = ((seeds[2 * i] as number) * 256 + (seeds[2 * i + 1] as number)) % broken.byteLength
    broken[at] = (broken[at] as number) ^ (1 + (i % 255))
    try {
      const out = bunzip2(broken, 1 << 20)
      if (same(out, data)) unchanged++
    } catch (e) {
      if (!(e instanceof Bzip2Error)) throw e
      corrupted++
    }
  }
  t.equal(corrupted + unchanged, 2_000, `${corrupted} refused, ${unchanged} decoded the same; none decoded to other bytes`)
})
