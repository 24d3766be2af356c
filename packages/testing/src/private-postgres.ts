/**
 * A PostgreSQL cluster of a test's own, for fault tests: it can be stopped (fast or immediate)
 * and started again without disturbing the shared server every other test uses.
 *
 * Each cluster is a fresh `initdb` in a temporary directory: trust authentication, superuser
 * `root` (so its URLs look like TEST_DATABASE_URL), listening on 127.0.0.1 only, on a port the
 * OS picked, with its unix socket inside that directory so it can never collide with the
 * system's /var/run/postgresql. initdb and pg_ctl refuse to run as root; when the test runs as
 * root they run as the `postgres` OS user, which then owns the directory.
 *
 * Cleanup has three layers because a test process ends in three ways: `destroy()` (the normal
 * way, from t.teardown); the process 'exit' event (process.exit, an uncaught error), where a
 * synchronous hook stops what is left; and death by a signal (tap's timeout, Ctrl-C, SIGKILL),
 * which no in-process hook sees: a small guardian shell, reading a pipe from the test process,
 * gets end-of-file when the process is gone and removes the cluster.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { appendFile, chown, mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import pg from 'pg'
import { freePort } from './names.js'
import { describe, run, startGuardian, tailOf } from './private-process.js'
import { eventually } from './wait.js'

export type PostgresStopMode = 'fast' | 'immediate'

export interface PrivatePostgresOptions {
  /** Extra postgresql.conf settings; they override the defaults (written after them). */
  readonly settings?: Readonly<Record<string, string | number | boolean>>
  /** How long one start may take, initdb excluded. Default 60 s. */
  readonly startTimeoutMs?: number
  /** Directory of initdb and pg_ctl. Default: the newest /usr/lib/postgresql/<version>/bin, else PATH. */
  readonly binDir?: string
  /** Where the cluster's temporary directory is made. Default os.tmpdir(); the postgres user must be able to enter it. */
  readonly baseDir?: string
}

export interface PrivatePostgres {
  /** The `postgres` database as superuser: postgres://root@127.0.0.1:<port>/postgres */
  readonly url: string
  readonly port: number
  /** The same server, another database. */
  readonly urlFor: (database: string) => string
  /** The temporary directory holding everything: data/, the socket and server.log. */
  readonly directory: string
  readonly dataDirectory: string
  readonly logFile: string
  /** As far as this handle knows: true after start(), false after stop() or destroy(). */
  readonly running: boolean
  /** Starts it again after stop(): same data directory, same port. A no-op while running. */
  readonly start: () => Promise<void>
  /**
   * `fast` (default) disconnects clients and shuts down cleanly; `immediate` aborts every
   * process at once, as a crash would, and the next start runs crash recovery. A no-op when stopped.
   */
  readonly stop: (options?: { mode?: PostgresStopMode }) => Promise<void>
  /** Stops it (immediate) if running and deletes its directory. Idempotent. */
  readonly destroy: () => Promise<void>
  /** The last lines of the server log, for failure messages. */
  readonly logTail: (lines?: number) => string
}

const DEFAULT_SETTINGS: Readonly<Record<string, string | number | boolean>> = {
  listen_addresses: '127.0.0.1',
  shared_buffers: '32MB',
  max_connections: 50,
  // Tests create and drop databases in bulk; keep checkpoints from dominating their time.
  max_wal_size: '256MB',
  log_line_prefix: '%m [%p] ',
}

export const startPrivatePostgres = async (options: PrivatePostgresOptions = {}): Promise<PrivatePostgres> => {
  const { startTimeoutMs = 60_000 } = options
  const bin = binaries(options.binDir)
  const asOwner = runAsPrefix()
  const directory = await mkdtemp(join(options.baseDir ?? tmpdir(), 'vp-pg-'))
  const dataDirectory = join(directory, 'data')
  const logFile = join(directory, 'server.log')
  const pgCtl = (...args: string[]): string[] => [...asOwner, bin.pgCtl, '-D', dataDirectory, ...args]
  const logTail = (lines = 30): string => tailOf(logFile, lines)

  let port = 0
  let running = false
  let destroyed: Promise<void> | undefined
  const entry: LiveCluster = { stopCommand: pgCtl('-m', 'immediate', '-w', '-t', '30', 'stop'), directory, running: false }
  live.add(entry)
  installExitHook()
  const guardian = startGuardian('vp-private-postgres-guardian', GUARDIAN_SCRIPT, directory, entry.stopCommand)

  const writeSettings = async (settings: Record<string, string | number | boolean>): Promise<void> => {
    // Later lines win in postgresql.conf, so appending overrides what initdb wrote (and a port
    // chosen again after a clash overrides the first one).
    const lines = Object.entries(settings).map(([k, v]) => `${k} = ${typeof v === 'string' ? `'${v.replaceAll("'", "''")}'` : String(v)}`)
    await appendFile(join(dataDirectory, 'postgresql.conf'), `\n# startPrivatePostgres\n${lines.join('\n')}\n`)
  }

  const urlFor = (database: string): string => `postgres://root@127.0.0.1:${port}/${encodeURIComponent(database)}`

  const startOnce = async (): Promise<void> => {
    const r = await run(pgCtl('-l', logFile, '-w', '-t', String(Math.ceil(startTimeoutMs / 1000)), 'start'), {
      cwd: directory,
      timeoutMs: startTimeoutMs + 10_000,
    })
    if (r.code !== 0) {
      // pg_ctl gives up waiting but leaves a slow server running; a half-started server must not leak.
      await run(pgCtl('-m', 'immediate', '-w', '-t', '10', 'stop'), { cwd: directory, timeoutMs: 20_000 })
      throw new Error(`private PostgreSQL did not start on port ${port}: ${describe(r)}\n--- ${logFile} (tail) ---\n${logTail()}`)
    }
    running = entry.running = true
    try {
      await eventually(`a connection to the private PostgreSQL on port ${port}`, () => canConnect(urlFor('postgres')), {
        timeoutMs: 10_000,
        intervalMs: 50,
      })
    } catch (e) {
      throw new Error(`${String(e)}\n--- ${logFile} (tail) ---\n${logTail()}`)
    }
  }

  const destroy = (): Promise<void> => {
    destroyed ??= (async () => {
      // Whatever this handle believes, nothing of the cluster may outlive its directory.
      const r = await run(entry.stopCommand, { cwd: '/', timeoutMs: 40_000 })
      if (r.code !== 0) killPostmaster(dataDirectory)
      running = entry.running = false
      await rm(directory, { recursive: true, force: true })
      live.delete(entry)
      guardian.disarm()
    })()
    return destroyed
  }

  try {
    if (process.getuid?.() === 0) await chownTo(directory, POSTGRES_USER)
    const init = await run(
      [...asOwner, bin.initdb, '-D', dataDirectory, '-U', 'root', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'],
      { cwd: directory, timeoutMs: 120_000 },
    )
    if (init.code !== 0) throw new Error(`initdb failed: ${describe(init)}`)
    const socketDirectory = join(directory, 'run')
    await mkdir(socketDirectory)
    if (process.getuid?.() === 0) await chownTo(socketDirectory, POSTGRES_USER)
    await writeSettings({ ...DEFAULT_SETTINGS, unix_socket_directories: socketDirectory, ...options.settings })
    // The port was free when picked but is not reserved: another process can take it before the
    // server binds. Only the first start may move to another port; after that the URL is fixed.
    for (let attempt = 1; ; attempt++) {
      port = await freePort()
      await writeSettings({ port })
      try {
        await startOnce()
        break
      } catch (e) {
        if (attempt < 3 && /could not bind|Address already in use/i.test(logTail(10))) continue
        throw e
      }
    }
  } catch (e) {
    await destroy()
    throw e
  }

  return {
    url: urlFor('postgres'),
    port,
    urlFor,
    directory,
    dataDirectory,
    logFile,
    get running() {
      return running
    },
    start: async () => {
      if (destroyed) throw new Error('private PostgreSQL: start() after destroy()')
      if (!running) await startOnce()
    },
    stop: async ({ mode = 'fast' } = {}) => {
      if (destroyed || !running) return
      const r = await run(pgCtl('-m', mode, '-w', '-t', '60', 'stop'), { cwd: directory, timeoutMs: 70_000 })
      // Exit code 3 from `pg_ctl status`: the server had already gone (killed by the test, say).
      if (r.code !== 0 && (await run(pgCtl('status'), { cwd: directory, timeoutMs: 10_000 })).code !== 3) {
        throw new Error(`private PostgreSQL did not stop (${mode}): ${describe(r)}\n--- ${logFile} (tail) ---\n${logTail()}`)
      }
      running = entry.running = false
    },
    destroy,
    logTail,
  }
}

const POSTGRES_USER = 'postgres'

/** initdb and pg_ctl of the newest installed major version (Debian layout), else from PATH. */
const binaries = (binDir?: string): { initdb: string; pgCtl: string } => {
  if (binDir !== undefined) return { initdb: join(binDir, 'initdb'), pgCtl: join(binDir, 'pg_ctl') }
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+(\.\d+)?$/.test(v) && existsSync(join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a))
    : []
  const dir = versions[0] === undefined ? undefined : join(root, versions[0], 'bin')
  if (dir !== undefined) return { initdb: join(dir, 'initdb'), pgCtl: join(dir, 'pg_ctl') }
  const initdb = onPath('initdb')
  const pgCtl = onPath('pg_ctl')
  if (initdb === undefined || pgCtl === undefined) {
    throw new Error(`private PostgreSQL: no initdb/pg_ctl under ${root}/<version>/bin nor on PATH; pass binDir`)
  }
  return { initdb, pgCtl }
}

const onPath = (name: string): string | undefined =>
  [...(process.env['PATH'] ?? '').split(delimiter), '/usr/sbin', '/sbin']
    .filter((d) => d !== '')
    .map((d) => join(d, name))
    .find((p) => existsSync(p))

/** The command prefix that runs a program as the postgres user when we are root; nothing otherwise. */
const runAsPrefix = (): string[] => {
  if (process.getuid?.() !== 0) return []
  const runuser = onPath('runuser')
  if (runuser !== undefined) return [runuser, '-u', POSTGRES_USER, '--']
  const setpriv = onPath('setpriv')
  if (setpriv !== undefined) return [setpriv, `--reuid=${POSTGRES_USER}`, `--regid=${POSTGRES_USER}`, '--init-groups', '--']
  const su = onPath('su')
  if (su !== undefined) return [su, '-s', '/bin/sh', POSTGRES_USER, '-c', 'exec "$0" "$@"']
  throw new Error('private PostgreSQL: running as root and none of runuser, setpriv, su was found to drop to the postgres user')
}

const chownTo = async (path: string, user: string): Promise<void> => {
  const id = (flag: string): number => Number(execFileSync('id', [flag, user], { encoding: 'utf8' }).trim())
  await chown(path, id('-u'), id('-g'))
}

/** Last resort when pg_ctl cannot stop it: the backends exit on their own once the postmaster is gone. */
const killPostmaster = (dataDirectory: string): void => {
  try {
    const pid = Number(readFileSync(join(dataDirectory, 'postmaster.pid'), 'utf8').split('\n')[0])
    if (Number.isInteger(pid) && pid > 1) process.kill(pid, 'SIGKILL')
  } catch {
    // No pid file or no such process: nothing is running.
  }
}

const canConnect = async (url: string): Promise<boolean> => {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.query('SELECT 1')
    return true
  } finally {
    await client.end().catch(() => {})
  }
}

interface LiveCluster {
  readonly stopCommand: readonly string[]
  readonly directory: string
  running: boolean
}

/** Clusters not destroyed yet, for the exit hook. */
const live = new Set<LiveCluster>()
let exitHookInstalled = false

const installExitHook = (): void => {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // Only synchronous work can run in an 'exit' listener; an immediate stop takes well under a second.
  process.on('exit', () => {
    for (const c of live) {
      const [cmd, ...args] = c.stopCommand as [string, ...string[]]
      try {
        if (c.running) execFileSync(cmd, args, { cwd: '/', stdio: 'ignore', timeout: 15_000 })
      } catch {}
      try {
        rmSync(c.directory, { recursive: true, force: true })
      } catch {}
    }
    live.clear()
  })
}

/**
 * Reads one line: `disarm` means destroy() already cleaned up. End-of-file means the test process
 * died (the kernel closes the pipe however it died): stop the cluster and delete its directory.
 */
const GUARDIAN_SCRIPT = `read -r line
[ "$line" = disarm ] && exit 0
"$@" >/dev/null 2>&1
rm -rf -- "$VP_GUARD_DIRECTORY"`
