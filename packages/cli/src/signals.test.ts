import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { stopSignal } from './signals.js'

const SIGNALS = fileURLToPath(new URL('./signals.ts', import.meta.url))

// In a child process: tap's own runner handles signals sent to the test process.
const child = (signal: NodeJS.Signals): ReturnType<typeof spawnSync> =>
  spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      `
      const { stopSignal } = await import(${JSON.stringify(SIGNALS)})
      const count = () => process.listenerCount('SIGTERM') + process.listenerCount('SIGINT')
      const before = count()
      const stop = stopSignal()
      // The signal comes while the command is still starting, before it awaits \`stop\`.
      process.kill(process.pid, ${JSON.stringify(signal)})
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r))
      process.stdout.write('started;')
      process.stdout.write('stopped by ' + (await stop.received) + ';handlers left ' + (count() - before))
      `,
    ],
    { encoding: 'utf8', timeout: 30_000 },
  )

t.test('release gives the signals back', async (t) => {
  const before = process.listenerCount('SIGTERM') + process.listenerCount('SIGINT')
  const stop = stopSignal()
  t.equal(process.listenerCount('SIGTERM') + process.listenerCount('SIGINT'), before + 2)
  stop.release()
  stop.release()
  t.equal(process.listenerCount('SIGTERM') + process.listenerCount('SIGINT'), before)
})

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`${signal} during startup is held: the command finishes starting, then stops and exits 0`, async (t) => {
    const r = child(signal)
    t.equal(r.signal, null, 'not killed by the signal')
    t.equal(r.status, 0, String(r.stderr))
    t.equal(r.stdout, `started;stopped by ${signal};handlers left 0`)
  })
}

// A signal that arrives while the program is still loading (bin.ts holds them first thing).
const loading = (then: string): ReturnType<typeof spawnSync> =>
  spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      `
      const { holdStopSignals, releaseHeldSignals, stopSignal } = await import(${JSON.stringify(SIGNALS)})
      holdStopSignals()
      process.kill(process.pid, 'SIGTERM')
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r))
      process.stdout.write('loaded;')
      ${then}
      `,
    ],
    { encoding: 'utf8', timeout: 30_000 },
  )

t.test('SIGTERM while the program loads is held for a command that claims it: it stops and exits 0', async (t) => {
  const r = loading(`process.stdout.write('stopped by ' + (await stopSignal().received))`)
  t.equal(r.signal, null, 'not killed by the signal')
  t.equal(r.status, 0, String(r.stderr))
  t.equal(r.stdout, 'loaded;stopped by SIGTERM')
})

t.test('SIGTERM while the program loads, then a command that does not claim it: the default, exit by the signal', async (t) => {
  const r = loading(`releaseHeldSignals(); await new Promise((r) => setTimeout(r, 5_000)); process.stdout.write('ran on')`)
  t.equal(r.signal, 'SIGTERM')
  t.equal(r.stdout, 'loaded;', 'killed when released, not after running on')
})
