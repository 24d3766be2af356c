/**
 * The persistor as a real process (the CLI from source, through tsx), for tests that need
 * signals, crashes and its real composition. Its JSON log lines are collected and can be awaited.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const CLI_SOURCE = fileURLToPath(new URL('../../packages/cli/src/bin.ts', import.meta.url))

export interface LogLine {
  readonly level: string
  readonly msg: string
  readonly [key: string]: unknown
}

export interface PersistorProcess {
  readonly child: ChildProcess
  readonly lines: LogLine[]
  /** Everything written to stdout and stderr, for scanning (secrets, errors). */
  readonly output: () => string
  /** Resolves with the first log line (already seen or future) matching. */
  readonly waitFor: (predicate: (l: LogLine) => boolean, what: string, timeoutMs?: number) => Promise<LogLine>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Throws (fatally for `eventually`) if the process has exited: call it inside probes. */
  readonly assertAlive: () => void
  /** Sends a signal if still running. */
  readonly kill: (signal?: NodeJS.Signals) => void
}

export const cliArgs = (args: readonly string[]): string[] => ['--import', 'tsx', '--conditions=vitrage-source', CLI_SOURCE, ...args]

export const startPersistor = (args: readonly string[], env: Record<string, string> = {}): PersistorProcess => {
  const child = spawn(process.execPath, cliArgs(args), {
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '/tmp', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: LogLine[] = []
  let raw = ''
  let pending = ''
  const waiters: Array<{ predicate: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = []
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    raw += chunk
    pending += chunk
    let nl = pending.indexOf('\n')
    while (nl >= 0) {
      const text = pending.slice(0, nl)
      pending = pending.slice(nl + 1)
      nl = pending.indexOf('\n')
      try {
        const line = JSON.parse(text) as LogLine
        lines.push(line)
        for (const w of [...waiters]) {
          if (w.predicate(line)) {
            waiters.splice(waiters.indexOf(w), 1)
            w.resolve(line)
          }
        }
      } catch {
        // not a log line
      }
    }
  })
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    raw += chunk
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }))
  })
  return {
    child,
    lines,
    output: () => raw,
    exited,
    assertAlive: () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw Object.assign(new Error(`persistor exited (${child.exitCode ?? child.signalCode}); output:\n${raw.slice(-4000)}`), { fatal: true })
      }
    },
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    },
    waitFor: (predicate, what, timeoutMs = 60_000) => {
      const seen = lines.find(predicate)
      if (seen !== undefined) return Promise.resolve(seen)
      return new Promise<LogLine>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; output:\n${raw.slice(-4000)}`)), timeoutMs)
        const onExit = (): void => {
          clearTimeout(timer)
          reject(new Error(`persistor exited while waiting for ${what}; output:\n${raw.slice(-4000)}`))
        }
        child.once('exit', onExit)
        waiters.push({
          predicate,
          resolve: (l) => {
            clearTimeout(timer)
            child.off('exit', onExit)
            resolve(l)
          },
        })
      })
    },
  }
}

export const isConsuming = (l: LogLine): boolean => l.msg === 'consuming'

/** Sends `signal` and resolves with how the process exited, and how many ms after the signal. */
export const stopAndTime = async (p: PersistorProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<{ exit: { code: number | null; signal: NodeJS.Signals | null }; took: number }> => {
  const started = Date.now()
  p.kill(signal)
  const exit = await p.exited
  return { exit, took: Date.now() - started }
}
