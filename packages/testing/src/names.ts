import { createHash, randomBytes } from 'node:crypto'
import { readlinkSync } from 'node:fs'
import { hostname } from 'node:os'

/**
 * Four hex digits naming this host and pid namespace. A pid means a process only within its
 * namespace: test runners in two containers sharing one server can both have a process 1234,
 * so what a name's pid says is checked only where its tag is ours.
 */
export const hostTag: string = (() => {
  let namespace = ''
  try {
    namespace = readlinkSync('/proc/self/ns/pid')
  } catch {
    // Not Linux: the host name alone.
  }
  return createHash('sha256').update(`${hostname()}\0${namespace}`).digest('hex').slice(0, 4)
})()

/**
 * A name no other test file or run uses, valid as an identifier: prefix, pid, this host's tag and
 * 8 random hex digits (`vp_test_4711_3fa2c0ffee12`).
 */
export const uniqueName = (prefix: string): string => `${prefix}_${process.pid}_${hostTag}${randomBytes(4).toString('hex')}`

/** A TCP port that was free a moment ago (the OS picks it). */
export const freePort = async (): Promise<number> => {
  const { createServer } = await import('node:net')
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const address = s.address()
      s.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0))
    })
  })
}

/** mulberry32: a seeded random sequence in [0, 1), so a failing random case names a reproducible seed. */
export const prng = (seed: number): (() => number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}
