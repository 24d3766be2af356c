/**
 * A RabbitMQ node of a test's own, for fault tests: it can be stopped, killed, restarted and
 * have its client connections forced closed without disturbing the shared broker (rabbit@localhost)
 * every other test uses.
 *
 * Each node is a second node on this machine whose every file lives in one temporary directory:
 * database, logs, pid file, console output, configuration and Erlang cookie (HOME points there,
 * so the cookie is not the shared node's). The system files are bypassed on purpose:
 * /etc/rabbitmq/rabbitmq.conf pins the listener to 127.0.0.1:5672, rabbitmq-env.conf names the
 * node rabbit@localhost, and the shared node's plugins would try to bind their ports again. It
 * listens on 127.0.0.1 only (AMQP and Erlang distribution), on ports the OS picked; guest may log
 * in because connections come over loopback.
 *
 * The server runs as the current user (RabbitMQ, unlike PostgreSQL, accepts root), from
 * /usr/lib/rabbitmq/bin when present: Debian's /usr/sbin wrappers switch to the rabbitmq user,
 * whose HOME, and so cookie, is the shared node's.
 *
 * Cleanup has the same three layers as private-postgres.ts: destroy(), a synchronous 'exit' hook,
 * and a guardian shell that kills the node when the test process dies by a signal.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { freePort, uniqueName } from './names.js'
import { describe, type RunResult, run, startGuardian, tailOf } from './private-process.js'

export interface PrivateRabbitOptions {
  /** Extra rabbitmq.conf lines (key = value); they override the defaults (written after them). */
  readonly config?: Readonly<Record<string, string | number | boolean>>
  /** How long one start may take. Default 90 s. */
  readonly startTimeoutMs?: number
  /** Directory of rabbitmq-server and rabbitmqctl. Default /usr/lib/rabbitmq/bin if present, else PATH. */
  readonly scriptsDir?: string
  /** Where the node's temporary directory is made. Default os.tmpdir(). */
  readonly baseDir?: string
}

export interface PrivateRabbit {
  /** amqp://guest:guest@127.0.0.1:<port>/ */
  readonly url: string
  readonly port: number
  /** <unique>@localhost, for rabbitmqctl -n. */
  readonly nodeName: string
  /** The temporary directory holding everything (database, logs, configuration, cookie). */
  readonly directory: string
  readonly logFile: string
  /** As far as this handle knows: true after start(), false after stop(), kill() or destroy(). */
  readonly running: boolean
  /** Starts it again after stop() or kill(): same node, same data, same port. A no-op while running. */
  readonly start: () => Promise<void>
  /** Graceful stop (SIGTERM, which RabbitMQ handles like `rabbitmqctl stop`); waits until the node is gone. */
  readonly stop: () => Promise<void>
  /** SIGKILL to the Erlang VM, as a crash or an OOM kill would; waits until it is gone. */
  readonly kill: () => Promise<void>
  /**
   * Force-closes client connections (the clients get connection.close 320 CONNECTION_FORCED).
   * With a pattern, only those whose client-provided `connection_name` or whose broker name
   * ("127.0.0.1:<client port> -> 127.0.0.1:<port>") matches (a string matches as a substring).
   * Resolves to the number of connections closed.
   */
  readonly closeConnections: (namePattern?: string | RegExp) => Promise<number>
  /** Runs `rabbitmqctl -n <node> ...args` against this node and returns its output; throws on failure. */
  readonly ctl: (...args: string[]) => Promise<string>
  /** Kills it if running and deletes its directory. Idempotent. */
  readonly destroy: () => Promise<void>
  /** The last lines of the node's log, for failure messages. */
  readonly logTail: (lines?: number) => string
}

export const startPrivateRabbit = async (options: PrivateRabbitOptions = {}): Promise<PrivateRabbit> => {
  const { startTimeoutMs = 90_000 } = options
  const scripts = rabbitScripts(options.scriptsDir)
  const directory = await mkdtemp(join(options.baseDir ?? tmpdir(), 'vp-rmq-'))
  const nodeName = `${uniqueName('vp')}@localhost`
  const logFile = join(directory, 'log', `${nodeName}.log`)
  const pidFile = join(directory, 'rabbitmq.pid')
  const crashDump = join(directory, 'erl_crash.dump')
  const consoleFile = join(directory, 'console.log')
  const configFile = join(directory, 'rabbitmq.conf')
  const logTail = (lines = 40): string => tailOf(logFile, lines)

  let port = 0
  let distPort = 0
  let running = false
  let destroyed: Promise<void> | undefined
  const entry: LiveNode = { directory }
  live.add(entry)
  installExitHook()
  const guardian = startGuardian('vp-private-rabbitmq-guardian', GUARDIAN_SCRIPT, directory)

  const env = (): NodeJS.ProcessEnv => ({
    // Inherited RABBITMQ_* or ERL_* settings (ERL_FLAGS, ERL_LIBS, ...) would leak into this node.
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(RABBITMQ_|ERL_)/.test(k))),
    HOME: directory,
    RABBITMQ_NODENAME: nodeName,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: join(directory, 'mnesia'),
    RABBITMQ_LOG_BASE: join(directory, 'log'),
    RABBITMQ_PID_FILE: pidFile,
    RABBITMQ_ENABLED_PLUGINS_FILE: join(directory, 'enabled_plugins'),
    RABBITMQ_CONFIG_FILE: configFile,
    RABBITMQ_ADVANCED_CONFIG_FILE: join(directory, 'advanced.config'),
    // Environment variables override rabbitmq-env.conf, but that file also exports ERL_FLAGS and
    // the like; an empty one of our own keeps the node independent of the system's.
    RABBITMQ_CONF_ENV_FILE: join(directory, 'rabbitmq-env.conf'),
    // What the system file sets for the shared node, set here explicitly: distribution on
    // loopback only, and an epmd started by this node (if none runs) listening there too.
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    ERL_EPMD_ADDRESS: '127.0.0.1',
    ERL_CRASH_DUMP: crashDump,
  })

  const ctlRun = (args: readonly string[], timeoutMs = 60_000): Promise<RunResult> =>
    run([scripts.ctl, '-n', nodeName, ...args], { cwd: directory, env: env(), timeoutMs })

  const ctl = async (...args: string[]): Promise<string> => {
    const r = await ctlRun(args)
    if (r.code !== 0) throw new Error(`private RabbitMQ ${nodeName}: ${describe(r)}`)
    return r.output
  }

  // Where this start's console output begins: the file keeps every start's.
  let consoleOffset = 0

  const failure = (what: string, detail = ''): Error =>
    new Error(
      `private RabbitMQ ${nodeName} (port ${port}): ${what}${detail ? `\n${detail}` : ''}${crashSlogan(crashDump)}` +
        `\n--- ${consoleFile} (this start) ---\n${excerpt(consoleFile, consoleOffset)}\n--- ${logFile} (tail) ---\n${logTail()}`,
    )

  const writeConfig = async (): Promise<void> => {
    const settings: Record<string, string | number | boolean> = {
      'listeners.tcp.1': `127.0.0.1:${port}`,
      // The default, stated because the tests depend on it: guest may log in over loopback only.
      'loopback_users.guest': true,
      'log.console': false,
      'log.file.level': 'info',
      ...options.config,
    }
    await writeFile(configFile, `${Object.entries(settings).map(([k, v]) => `${k} = ${String(v)}`).join('\n')}\n`)
  }

  const startOnce = async (): Promise<void> => {
    const deadline = Date.now() + startTimeoutMs
    // Left from a kill or an earlier failure, they would be mistaken for this start's.
    for (const f of [pidFile, crashDump]) rmSync(f, { force: true })
    // Not `rabbitmq-server -detached`: that discards the VM's console, and errors that stop a
    // boot before the log file is set up (a bad setting, a port in use) are printed only there.
    // Run in the foreground instead, detached from us, its console going to a file.
    const out = openSync(consoleFile, 'a')
    consoleOffset = fstatSync(out).size
    let exited: string | undefined
    try {
      const server = spawn(scripts.server, [], { cwd: directory, env: env(), detached: true, stdio: ['ignore', out, out] })
      server.once('error', (e) => (exited = String(e)))
      server.once('exit', (code, sig) => (exited = `rabbitmq-server exited ${sig ?? code}`))
      server.unref()
    } finally {
      closeSync(out)
    }
    // await_startup fails at once while the node is not registered yet, so first wait for the
    // pid file, which the VM writes early in its boot.
    for (;;) {
      if (exited !== undefined) throw failure('the node died while booting', exited)
      const pid = readPid(pidFile)
      if (pid !== undefined && isAlive(pid)) break
      if (Date.now() > deadline) throw failure(`no running node after ${startTimeoutMs} ms`)
      await sleep(100)
    }
    running = true
    const seconds = Math.max(1, Math.ceil((deadline - Date.now()) / 1000))
    const ready = await ctlRun(['await_startup', '--timeout', String(seconds)], seconds * 1000 + 15_000)
    if (ready.code !== 0) throw failure('did not finish booting', exited ?? describe(ready))
  }

  /** The VM's pid, if the pid file names a live process of this node (never a recycled pid). */
  const nodePid = (): number | undefined => {
    const pid = readPid(pidFile)
    return pid !== undefined && isNodeProcess(pid, directory) ? pid : undefined
  }

  const killNow = async (): Promise<void> => {
    // The pid file may not be written yet (a start in progress), so look for the VM itself too.
    const fromFile = nodePid()
    const pids = new Set([...(fromFile === undefined ? [] : [fromFile]), ...ownedPids(directory)])
    for (const pid of pids) signal(pid, 'SIGKILL')
    for (const pid of pids) await waitGone(pid, 10_000)
    rmSync(pidFile, { force: true })
  }

  const destroy = (): Promise<void> => {
    destroyed ??= (async () => {
      await killNow()
      running = false
      await rm(directory, { recursive: true, force: true })
      live.delete(entry)
      guardian.disarm()
    })()
    return destroyed
  }

  try {
    await writeFile(join(directory, 'enabled_plugins'), '[].\n')
    await writeFile(join(directory, 'rabbitmq-env.conf'), '')
    await writeFile(join(directory, '.erlang.cookie'), randomBytes(15).toString('hex').toUpperCase(), { mode: 0o400 })
    // Ports are free when picked, not reserved: only the first start may move to other ones.
    for (let attempt = 1; ; attempt++) {
      port = await freePortOutside(CTL_DIST_PORTS)
      distPort = await freePortOutside([...CTL_DIST_PORTS, port])
      await writeConfig()
      try {
        await startOnce()
        break
      } catch (e) {
        await killNow()
        running = false
        if (attempt < 3 && /eaddrinuse|already in use|dist_port_already_used/i.test(String(e))) continue
        throw e
      }
    }
  } catch (e) {
    await destroy()
    throw e
  }

  return {
    url: `amqp://guest:guest@127.0.0.1:${port}/`,
    port,
    nodeName,
    directory,
    logFile,
    get running() {
      return running
    },
    start: async () => {
      if (destroyed) throw new Error(`private RabbitMQ ${nodeName}: start() after destroy()`)
      if (running) return
      try {
        await startOnce()
      } catch (e) {
        // A node that failed to boot must not linger half-started.
        await killNow()
        running = false
        throw e
      }
    },
    stop: async () => {
      if (destroyed || !running) return
      const pid = nodePid()
      if (pid !== undefined) {
        signal(pid, 'SIGTERM')
        if (!(await waitGone(pid, 60_000))) throw failure('did not stop within 60 s of SIGTERM')
      }
      running = false
    },
    kill: async () => {
      if (destroyed || !running) return
      await killNow()
      running = false
    },
    closeConnections: async (namePattern) => {
      const reason = 'closed by the test (closeConnections)'
      if (namePattern === undefined) {
        const out = await ctl('close_all_connections', '--global', reason)
        return Number(/Closed (\d+) connections/.exec(out)?.[1] ?? 0)
      }
      // Without g and y: a stateful RegExp would skip matches between calls.
      const re = typeof namePattern === 'string' ? undefined : new RegExp(namePattern.source, namePattern.flags.replace(/[gy]/g, ''))
      const matches = (s: string): boolean => (re === undefined ? s.includes(namePattern as string) : re.test(s))
      // Table output, because JSON output renders pids in a form close_connection does not accept.
      const rows = (await ctl('list_connections', 'pid', 'name', 'client_properties', '--no-table-headers', '--quiet'))
        .split('\n')
        .map((line) => line.split('\t'))
        .filter((cols): cols is [string, string, string] => cols.length >= 3 && cols[0]!.startsWith('<'))
      let closed = 0
      for (const [pid, name, properties] of rows) {
        const provided = /\{"connection_name","((?:[^"\\]|\\.)*)"\}/.exec(properties)?.[1]
        if (!matches(name) && !(provided !== undefined && matches(provided))) continue
        // A connection that closed in the meantime is not an error.
        if ((await ctlRun(['close_connection', pid, reason])).code === 0) closed++
      }
      return closed
    },
    ctl,
    destroy,
    logTail,
  }
}

/** rabbitmqctl's own distribution ports (35672-35682 by default): a node listening there would make concurrent CLI calls fail. */
const CTL_DIST_PORTS = Array.from({ length: 11 }, (_, i) => 35672 + i)

const freePortOutside = async (excluded: readonly number[]): Promise<number> => {
  for (;;) {
    const p = await freePort()
    if (!excluded.includes(p)) return p
  }
}

const rabbitScripts = (scriptsDir?: string): { server: string; ctl: string } => {
  const dir = scriptsDir ?? (existsSync('/usr/lib/rabbitmq/bin/rabbitmq-server') ? '/usr/lib/rabbitmq/bin' : undefined)
  if (dir !== undefined) return { server: join(dir, 'rabbitmq-server'), ctl: join(dir, 'rabbitmqctl') }
  const onPath = (name: string): string | undefined =>
    [...(process.env['PATH'] ?? '').split(delimiter), '/usr/sbin', '/sbin']
      .filter((d) => d !== '')
      .map((d) => join(d, name))
      .find((p) => existsSync(p))
  const server = onPath('rabbitmq-server')
  const ctl = onPath('rabbitmqctl')
  if (server === undefined || ctl === undefined) {
    throw new Error('private RabbitMQ: rabbitmq-server/rabbitmqctl not found in /usr/lib/rabbitmq/bin nor on PATH; pass scriptsDir')
  }
  return { server, ctl }
}

const readPid = (file: string): number | undefined => {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim())
    return Number.isInteger(pid) && pid > 1 ? pid : undefined
  } catch {
    return undefined
  }
}

/**
 * Whether a process still runs. A zombie counts as gone (where PID 1 does not reap orphans, a
 * killed VM stays one for a while), but only once its other threads have exited too: the VM's
 * main thread turns zombie first, and its sockets stay open until the last thread is gone.
 */
const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  if (!existsSync('/proc/self/stat')) return true
  try {
    if (!/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) return true
    return readdirSync(`/proc/${pid}/task`).length > 1
  } catch {
    // Vanished between the two looks.
    return false
  }
}

const signal = (pid: number, sig: NodeJS.Signals): void => {
  try {
    process.kill(pid, sig)
  } catch {
    // Already gone.
  }
}

const waitGone = async (pid: number, timeoutMs: number): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false
    await sleep(50)
  }
  return true
}

/**
 * Processes of this node: the Erlang VM runs with `-home <HOME>`, and HOME is the node's own
 * directory, whose name is unique. (rabbitmqctl's VMs for this node match too, which is right
 * when cleaning up.) Linux only; elsewhere cleanup relies on the pid file.
 */
const ownedPids = (directory: string): number[] => {
  try {
    return readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e))
      .map(Number)
      .filter((pid) => isNodeProcess(pid, directory))
  } catch {
    return []
  }
}

const isNodeProcess = (pid: number, directory: string): boolean => {
  let args: string[]
  try {
    args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
  } catch {
    // Exited, or no /proc (not Linux): trust a live pid from the pid file there.
    return !existsSync('/proc/self/cmdline') && isAlive(pid)
  }
  const i = args.indexOf('-home')
  return i >= 0 && args[i + 1] === directory && isAlive(pid)
}

/** The one-line reason the VM gave when it halted during boot (bad config, port in use, ...). */
const crashSlogan = (crashDump: string): string => {
  try {
    const slogan = /^Slogan: (.*)$/m.exec(readFileSync(crashDump, 'utf8').slice(0, 8_000))?.[1]
    return slogan === undefined ? '' : `\nErlang VM halted: ${slogan}`
  } catch {
    return ''
  }
}

/**
 * A boot error's reason comes first ("You've tried to set x, but there is no setting with that
 * name") and pages of crash reports follow, so show both ends of the console output.
 */
const excerpt = (file: string, fromByte: number): string => {
  let lines: string[]
  try {
    lines = readFileSync(file).subarray(fromByte).toString('utf8').trimEnd().split('\n')
  } catch (e) {
    return `(no output: ${(e as Error).message})`
  }
  if (lines.length <= 45) return lines.join('\n')
  return [...lines.slice(0, 30), `... (${lines.length - 40} lines) ...`, ...lines.slice(-10)].join('\n')
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

interface LiveNode {
  readonly directory: string
}

/** Nodes not destroyed yet, for the exit hook. */
const live = new Set<LiveNode>()
let exitHookInstalled = false

const installExitHook = (): void => {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // Only synchronous work can run in an 'exit' listener: SIGKILL is, a graceful stop is not, and
  // the data is being deleted anyway.
  process.on('exit', () => {
    for (const n of live) {
      for (const pid of ownedPids(n.directory)) signal(pid, 'SIGKILL')
      try {
        rmSync(n.directory, { recursive: true, force: true })
      } catch {}
    }
    live.clear()
  })
}

/**
 * Reads one line: `disarm` means destroy() already cleaned up. End-of-file means the test process
 * died (the kernel closes the pipe however it died): kill this node's processes, found as
 * ownedPids() finds them, and delete its directory.
 */
const GUARDIAN_SCRIPT = `read -r line
[ "$line" = disarm ] && exit 0
d=$VP_GUARD_DIRECTORY
for f in $(grep -laF -- "$d" /proc/[0-9]*/cmdline 2>/dev/null); do
  p=\${f#/proc/}; p=\${p%/cmdline}
  tr '\\0' '\\n' < "$f" 2>/dev/null | grep -A1 -xF -- -home | grep -qxF -- "$d" && kill -KILL "$p" 2>/dev/null
done
rm -rf -- "$d"`
