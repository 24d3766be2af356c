/** Shared pieces of the benchmarks: machine description, process RSS, formatting. */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'

export const machine = (): Record<string, string> => {
  const tryRun = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    } catch {
      return 'unknown'
    }
  }
  return {
    cpu: `${cpus().length} x ${cpus()[0]?.model ?? 'unknown'}`,
    memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
    node: process.version,
    postgres: tryRun('psql', ['--version']),
    rabbitmq: tryRun('rabbitmqctl', ['-q', 'version']),
  }
}

/** Peak resident set size of a process (VmHWM), in MiB. */
export const peakRssMiB = (pid: number): number => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const m = /VmHWM:\s+(\d+) kB/.exec(status)
  return m ? Math.round(Number(m[1]) / 1024) : Number.NaN
}

/** CPU seconds (user + system) a process has used so far; Linux reports them in 1/100 s ticks. */
export const cpuSeconds = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the parenthesised command name (which may hold spaces): utime and stime are 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** Machine-wide CPU counters (/proc/stat): busy and total ticks, for the busy share of an interval. */
export const machineTicks = (): { busy: number; total: number } => {
  const cpu = (readFileSync('/proc/stat', 'utf8').split('\n')[0] as string).trim().split(/\s+/).slice(1).map(Number)
  const total = cpu.reduce((a, b) => a + b, 0)
  const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0) // idle + iowait
  return { busy: total - idle, total }
}

export const rate = (count: number, ms: number): number => Math.round((count / ms) * 1000)

export const fmt = (n: number): string => n.toLocaleString('en-US')

/** A bad option of a benchmark: printed as a usage message, exit 2 (main.ts). */
export class BenchUsageError extends Error {}

export const argValue = (args: readonly string[], flag: string, fallback: number): number => {
  const i = args.indexOf(flag)
  if (i < 0) return fallback
  const v = Number(args[i + 1])
  if (!Number.isInteger(v) || v <= 0) throw new BenchUsageError(`${flag} takes a positive integer, got ${JSON.stringify(args[i + 1] ?? '')}`)
  return v
}

/** Appends encoded notification bodies to the event table in batches (the persistor's own append). */
export const loadBodies = async (databaseUrl: string, batches: Iterable<Buffer[]>): Promise<number> => {
  const { decodeMessage } = await import('@vitrage-persistor/core')
  const { appendBatch, prepareEvent } = await import('@vitrage-persistor/store-postgres')
  const pg = (await import('pg')).default
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  let n = 0
  try {
    for (const bodies of batches) {
      const prepared = bodies.map((b) => {
        const d = decodeMessage(b, { maxMessageBytes: 1 << 24 })
        if (d._tag === 'Left') throw new Error(d.left.detail)
        return prepareEvent(d.right)
      })
      await appendBatch(client, prepared)
      n += prepared.length
    }
  } finally {
    await client.end()
  }
  return n
}

/** Runs `fn` and returns its duration in ms. */
export const timed = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
  const started = performance.now()
  const value = await fn()
  return [value, performance.now() - started]
}
