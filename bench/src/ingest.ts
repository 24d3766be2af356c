/**
 * `pnpm bench ingest [--messages N] [--batch-size B] [--prefetch P]`
 *
 * In one run: prefills two durable queues with the same N realistic messages, then measures
 * (a) the broker-only drain rate (a bare amqplib consumer that acks, in its own process) and
 * (b) the persistor's drain rate into PostgreSQL (the real CLI from dist/, its own process),
 * and prints both, their ratio, and the persistor's peak RSS.
 */
import { spawn } from 'node:child_process'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { declareTopology } from '@vitrage-persistor/ingest'
import { schemaTemplate } from '@vitrage-persistor/store-postgres'
import { connectTestBroker, createTestDatabase, uniqueName } from '@vitrage-persistor/testing'
import pg from 'pg'
import { argValue, cpuSeconds, fmt, machine, machineTicks, peakRssMiB, rate } from './common.js'
import { makeBodies } from './messages.js'

const cpus = availableParallelism()
const CLI = fileURLToPath(new URL('../../packages/cli/bin/vitrage-persistor.js', import.meta.url))
const DRAIN = fileURLToPath(new URL('./broker-drain.ts', import.meta.url))

const prefill = async (publish: (body: Buffer) => boolean, confirm: () => Promise<void>, n: number, body: (i: number) => Buffer): Promise<number> => {
  const started = performance.now()
  for (let i = 0; i < n; i++) {
    publish(body(i))
    if ((i + 1) % 2000 === 0) await confirm()
  }
  await confirm()
  return performance.now() - started
}

export const benchIngest = async (args: readonly string[]): Promise<void> => {
  const n = argValue(args, '--messages', 200_000)
  const batchSize = argValue(args, '--batch-size', 1000)
  const prefetch = argValue(args, '--prefetch', 2000)
  const broker = await connectTestBroker()
  const db = await createTestDatabase(schemaTemplate)
  const base = uniqueName('vpbench')
  const names = { exchange: `${base}_x`, topic: `${base}_t`, queue: `${base}_q`, baseline: `${base}_baseline` }
  const sql = new pg.Pool({ connectionString: db.url, max: 1 })
  const cleanup = async (): Promise<void> => {
    await sql.end()
    await broker.cleanup({ queues: [names.queue, `${names.queue}.dead`, names.baseline], exchanges: [names.exchange, `${names.queue}.dlx`] })
    await db.drop()
  }
  try {
    console.log(`machine: ${JSON.stringify(machine())}`)
    console.log(`messages: ${fmt(n)}, batch size ${batchSize}, prefetch ${prefetch}`)
    const body = makeBodies()
    let total = 0
    for (let i = 0; i < 400; i++) total += body(i).byteLength
    const sample = Math.round(total / 400)
    const props = { contentType: 'application/json', contentEncoding: 'utf-8', deliveryMode: 2 }
    const ch = broker.channel

    // (a) broker-only baseline
    await ch.assertQueue(names.baseline, { durable: true })
    const fillA = await prefill((b) => ch.sendToQueue(names.baseline, b, props), () => ch.waitForConfirms(), n, body)
    console.log(`prefilled baseline queue: ${fmt(n)} messages of ${sample} bytes on average in ${(fillA / 1000).toFixed(1)} s`)
    const drain = await new Promise<{ count: number; ms: number }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', DRAIN, broker.url, names.baseline, String(n)], { stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString()
      })
      child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { count: number; ms: number }) : reject(new Error(`broker drain exited ${code}`))))
    })
    const brokerRate = rate(drain.count, drain.ms)
    console.log(`(a) broker-only drain: ${fmt(brokerRate)} messages/s (${(drain.ms / 1000).toFixed(2)} s)`)

    // (b) the persistor
    await declareTopology(broker.connection, { exchange: names.exchange, topic: names.topic, queue: names.queue, compatQueue: false, osloDurable: false })
    const routingKey = `${names.topic}.info`
    const fillB = await prefill((b) => ch.publish(names.exchange, routingKey, b, props), () => ch.waitForConfirms(), n, body)
    console.log(`prefilled persistor queue in ${(fillB / 1000).toFixed(1)} s`)
    // BENCH_PERSISTOR_NODE_FLAGS (space-separated) reaches only the persistor's process, for
    // profiling it (`--cpu-prof --cpu-prof-dir=DIR`), which NODE_OPTIONS does not allow.
    const nodeFlags = (process.env['BENCH_PERSISTOR_NODE_FLAGS'] ?? '').split(' ').filter((f) => f !== '')
    const child = spawn(
      process.execPath,
      [...nodeFlags, CLI, 'run', '--database-url', db.url, '--amqp-url', broker.url, '--exchange', names.exchange, '--topic', names.topic, '--queue', names.queue,
        '--http-port', '0', '--batch-size', String(batchSize), '--prefetch', String(prefetch), '--log-level', 'warn'],
      { stdio: ['ignore', 'inherit', 'inherit'] },
    )
    // Timed from the first stored row to the last, so start-up (migrations check, connecting) is excluded as it is for (a).
    let first = 0
    let last = 0
    let peak = 0
    // The persistor's own CPU and the machine's busy share over the same interval as the rate:
    // where the time goes, in every run (the ratio is bounded by the machine's two vCPUs).
    let cpuAtFirst = 0
    let ticksAtFirst = { busy: 0, total: 0 }
    for (;;) {
      const { rows } = await sql.query<{ max: string | null }>('SELECT max(id) AS max FROM event')
      const stored = Number(rows[0]?.max ?? 0)
      const now = performance.now()
      if (stored > 0 && first === 0) {
        first = now
        cpuAtFirst = cpuSeconds(child.pid as number)
        ticksAtFirst = machineTicks()
      }
      peak = Math.max(peak, peakRssMiB(child.pid as number))
      if (stored >= n) {
        last = now
        break
      }
      if (child.exitCode !== null) throw new Error(`persistor exited ${child.exitCode}`)
      await new Promise((r) => setTimeout(r, 20))
    }
    peak = Math.max(peak, peakRssMiB(child.pid as number))
    const persistorCpu = cpuSeconds(child.pid as number) - cpuAtFirst
    const ticks = machineTicks()
    const machineBusy = (ticks.busy - ticksAtFirst.busy) / Math.max(1, ticks.total - ticksAtFirst.total)
    child.kill('SIGTERM')
    await new Promise((r) => child.once('exit', r))
    // The first poll that saw rows may be up to one poll late; the n rows include the first batch.
    const persistorRate = rate(n, last - first)
    console.log(`(b) persistor drain into PostgreSQL: ${fmt(persistorRate)} events/s (${((last - first) / 1000).toFixed(2)} s)`)
    console.log(`ratio (b)/(a): ${(persistorRate / brokerRate).toFixed(2)}`)
    console.log(`persistor peak RSS: ${peak} MiB`)
    // Rows stored before the first poll saw any are charged to the interval: a slight overestimate.
    const cpuMicros = Math.round((persistorCpu * 1e6) / n)
    console.log(`persistor CPU: ${cpuMicros} µs an event; machine busy ${(100 * machineBusy).toFixed(0)}% of its ${cpus} vCPUs during (b)`)
    console.log(JSON.stringify({ bench: 'ingest', messages: n, meanBytes: sample, batchSize, prefetch, brokerRate, persistorRate, ratio: persistorRate / brokerRate, peakRssMiB: peak, persistorCpuMicros: cpuMicros, machineBusy: Number(machineBusy.toFixed(3)), nodeFlags }))
  } finally {
    await cleanup()
  }
}
