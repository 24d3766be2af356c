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
