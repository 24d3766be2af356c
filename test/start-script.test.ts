/**
 * README's first command, `pnpm start`: a supervisor's SIGTERM reaches the persistor itself, and
 * Ctrl-C during the build starts nothing.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { eventually, freePort } from '@vitrage-persistor/testing'
import t from 'tap'
import { setupWorld } from './support/setup.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const startScript = (JSON.parse(readFileSync(`${root}/package.json`, 'utf8')) as { scripts: { start: string } }).scripts.start

/** True while any process of the group is alive. */
const groupAlive = (pgid: number): boolean => {
  try {
    process.kill(-pgid, 0)
    return true
  } catch {
    return false
  }
}

const exitOf = (child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> =>
  new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))

t.test('pnpm start: SIGTERM to pnpm drains the persistor, which exits 0, and no process is left behind', async (t) => {
  const world = await setupWorld(t)
  const port = await freePort()
  // Its own process group, as under a supervisor; the signal goes to pnpm alone.
  const pnpm = spawn('pnpm', ['start'], {
    cwd: root,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      DATABASE_URL: world.db.url,
      AMQP_URL: world.broker.url,
      PERSISTOR_EXCHANGE: world.names.exchange,
      PERSISTOR_TOPIC: world.names.topic,
      PERSISTOR_QUEUE: world.names.queue,
      PERSISTOR_HTTP_PORT: String(port),
      PERSISTOR_HTTP_HOST: '127.0.0.1',
    },
  })
  const pgid = pnpm.pid as number
  t.teardown(() => {
    if (groupAlive(pgid)) process.kill(-pgid, 'SIGKILL')
  })
  let output = ''
  pnpm.stdout?.setEncoding('utf8').on('data', (d: string) => (output += d))
  pnpm.stderr?.setEncoding('utf8').on('data', (d: string) => (output += d))
  const exited = exitOf(pnpm)
  await eventually(
    'the persistor ready',
    async () => {
      if (pnpm.exitCode !== null) throw Object.assign(new Error(`pnpm start exited: ${output.slice(-2000)}`), { fatal: true })
      return (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200
    },
    { timeoutMs: 180_000, intervalMs: 200 },
  )
  pnpm.kill('SIGTERM')
  t.same(await exited, { code: 0, signal: null }, 'pnpm start exits 0 after SIGTERM')
  t.match(output, /"msg":"stopped"/, 'the persistor itself got the signal and drained')
  await eventually('every process of the group gone', () => !groupAlive(pgid), { timeoutMs: 10_000 })
})

t.test('the start script: Ctrl-C during the build starts no persistor, even though the build exits 0 on it (as turbo does)', async (t) => {
  // The script as package.json has it, with the build and the persistor stood in for: the build
  // by a process that exits 0 on SIGINT, the persistor by one that says it started.
  const build = /turbo run build[^&]*/.exec(startScript)?.[0]
  const persistor = /node packages\/cli\/bin\/vitrage-persistor\.js run/.exec(startScript)?.[0]
  t.ok(build !== undefined && persistor !== undefined, startScript)
  const script = startScript
    .replace(build as string, `node -e "process.on('SIGINT', () => process.exit(0)); process.on('SIGTERM', () => process.exit(0)); console.log('building'); setInterval(() => {}, 1000)" `)
    .replace(persistor as string, `node -e "console.log('persistor started')"`)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    const sh = spawn('sh', ['-c', script], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    const pgid = sh.pid as number
    t.teardown(() => {
      if (groupAlive(pgid)) process.kill(-pgid, 'SIGKILL')
    })
    let output = ''
    sh.stdout?.setEncoding('utf8').on('data', (d: string) => (output += d))
    const exited = exitOf(sh)
    await eventually('building', () => output.includes('building'))
    // A terminal's Ctrl-C goes to the whole foreground group; so does a supervisor's group kill.
    process.kill(-pgid, signal)
    const exit = await exited
    t.equal(exit.code, signal === 'SIGINT' ? 130 : 143, `${signal}: the script ends with the signal's status`)
    t.notMatch(output, /persistor started/, `${signal}: nothing started after the interrupted build`)
  }
  // Without a signal, the same script goes on to the persistor once the build succeeds.
  const whole = spawn('sh', ['-c', script.replace(/setInterval\(\(\) => \{\}, 1000\)/, 'process.exit(0)')], { stdio: ['ignore', 'pipe', 'pipe'] })
  let said = ''
  whole.stdout?.setEncoding('utf8').on('data', (d: string) => (said += d))
  t.equal((await exitOf(whole)).code, 0)
  t.match(said, /persistor started/)
})
