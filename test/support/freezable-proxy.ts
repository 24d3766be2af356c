/**
 * A path to a server that a test can freeze: a TCP forwarder in a child process, stopped with
 * SIGSTOP and resumed with SIGCONT (see tcp-forwarder.mjs). The shared server itself is never
 * touched, so other tests go on; only the clients given `url` see it stop answering.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

export interface FreezableProxy {
  /** `url` with its host and port replaced by the proxy's. */
  readonly url: string
  readonly freeze: () => void
  readonly thaw: () => void
  /** Blackholes the connections open now (nothing more moves on them, nothing closes them); new ones pass. */
  readonly cutOpenConnections: () => void
  /** As cutOpenConnections, but the server's side of each stays open: the server never hears of it. */
  readonly severOpenConnections: () => void
  /** With `stallAtFirstChannel` or `stallAtConnect`: resolves when a connection has stalled (see tcp-forwarder.mjs). */
  readonly stalled: () => Promise<void>
  /**
   * How many client connections have sent bytes the proxy has not read (while frozen: requests
   * waiting in the frozen path), from the kernel's receive queues of the proxy's sockets.
   */
  readonly waitingRequests: () => Promise<number>
  /** Idempotent. */
  readonly close: () => Promise<void>
}

/** Established TCP sockets on local `port` with bytes in their receive queue (/proc/net/tcp{,6}). */
const socketsWithUnreadBytes = async (port: number): Promise<number> => {
  let n = 0
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '')
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue ...
      const [, local, , state, queues] = line.trim().split(/\s+/)
      if (local === undefined || state !== '01' || queues === undefined) continue
      if (Number.parseInt(local.split(':')[1] ?? '', 16) !== port) continue
      if (Number.parseInt(queues.split(':')[1] ?? '0', 16) > 0) n++
    }
  }
  return n
}

export interface ProxyOptions {
  /** AMQP only: each connection stops moving once it is open, at the client's first channel frame. */
  readonly stallAtFirstChannel?: boolean
  /** Each connection is accepted, and nothing more. */
  readonly stallAtConnect?: boolean
  /** Each connection waits this long before it is forwarded (a slow network or server). */
  readonly delayConnectMs?: number
}

const FORWARDER = fileURLToPath(new URL('./tcp-forwarder.mjs', import.meta.url))

export const startFreezableProxy = async (url: string, options: ProxyOptions = {}): Promise<FreezableProxy> => {
  const target = new URL(url)
  const child = spawn(process.execPath, [FORWARDER, target.hostname, target.port || '5432', ...(options.stallAtFirstChannel === true ? ['--stall-at-first-channel'] : []), ...(options.stallAtConnect === true ? ['--stall-at-connect'] : []), ...(options.delayConnectMs ? ['--delay-connect-ms', String(options.delayConnectMs)] : [])], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const [line] = (await once(child.stdout, 'data')) as [Buffer]
  let stalls = 0
  let onStall = (): void => {}
  child.stdout.on('data', (d: Buffer) => {
    stalls += d.toString().split('stalled').length - 1
    onStall()
  })
  const proxied = new URL(url)
  proxied.hostname = '127.0.0.1'
  proxied.port = line.toString().trim()
  let closing: Promise<void> | undefined
  return {
    url: proxied.toString(),
    freeze: () => child.kill('SIGSTOP'),
    thaw: () => child.kill('SIGCONT'),
    cutOpenConnections: () => child.kill('SIGUSR1'),
    severOpenConnections: () => child.kill('SIGUSR2'),
    waitingRequests: () => socketsWithUnreadBytes(Number(proxied.port)),
    stalled: () =>
      new Promise<void>((resolve) => {
        if (stalls > 0) return resolve()
        onStall = () => {
          if (stalls > 0) resolve()
        }
      }),
    close: () => {
      closing ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return
        const exited = once(child, 'exit')
        child.kill('SIGCONT')
        child.kill('SIGKILL')
        await exited
      })()
      return closing
    },
  }
}
