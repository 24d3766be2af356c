/**
 * Process plumbing shared by the private servers (private-postgres.ts, private-rabbitmq.ts):
 * running a command to completion, log tails, and the guardian that cleans a server up when
 * the test process dies by a signal (where no exit hook runs).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'

export const tailOf = (file: string, lines: number): string => {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch (e) {
    return `(no log: ${(e as Error).message})`
  }
}

export interface RunResult {
  readonly argv: readonly string[]
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly output: string
  readonly timedOut: boolean
}

export const describe = (r: RunResult): string =>
  `\`${r.argv.join(' ')}\` ${r.timedOut ? 'timed out' : r.signal ? `was killed by ${r.signal}` : `exited ${r.code}`}${r.output.trim() ? `:\n${r.output.trimEnd()}` : ''}`

/**
 * Runs a command to completion, stdout and stderr merged. Resolves (never rejects) so callers
 * decide what a failure means. A daemon the command starts can inherit its output pipes and hold
 * them open for ever, so the command's own exit ends the wait, not the pipes closing.
 */
export const run = (argv: readonly string[], { cwd, env, timeoutMs }: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<RunResult> =>
  new Promise((resolve) => {
    const [cmd, ...args] = argv as [string, ...string[]]
    let output = ''
    let timedOut = false
    let done = false
    const child = spawn(cmd, args, { cwd, ...(env ? { env } : {}), stdio: ['ignore', 'pipe', 'pipe'] })
    const collect = (b: Buffer): void => {
      output = (output + b.toString('utf8')).slice(-32_000)
    }
    child.stdout.on('data', collect)
    child.stderr.on('data', collect)
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    const finish = (code: number | null, sig: NodeJS.Signals | null): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      child.stdout.destroy()
      child.stderr.destroy()
      resolve({ argv, code, signal: sig, output, timedOut })
    }
    child.once('error', (e) => {
      output += String(e)
      finish(null, null)
    })
    child.once('close', finish)
    child.once('exit', (code, sig) => setTimeout(() => finish(code, sig), 200).unref())
  })

/**
 * Starts a guardian shell running `script` (which reads one line from its stdin: `disarm` means
 * the server was destroyed normally; end-of-file means the test process died, however it died,
 * since the kernel closes the pipe) with VP_GUARD_DIRECTORY set to the server's directory.
 */
export const startGuardian = (name: string, script: string, directory: string, args: readonly string[] = []): { disarm: () => void } => {
  let child: ChildProcess | undefined
  try {
    // Its own session: a Ctrl-C to the test's process group must not take the guardian with it.
    child = spawn('/bin/sh', ['-c', script, name, ...args], {
      cwd: '/',
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore'],
      env: { ...process.env, VP_GUARD_DIRECTORY: directory },
    })
    child.on('error', () => {})
    child.stdin?.on('error', () => {})
    // Neither the guardian nor its pipe may keep the test process alive.
    child.unref()
    ;(child.stdin as unknown as { unref?: () => void } | null)?.unref?.()
  } catch {
    // Without a guardian the exit hook and destroy() still clean up; only signal deaths would leak.
  }
  return {
    disarm: () => {
      child?.stdin?.end('disarm\n')
    },
  }
}
