/**
 * The real oslo.messaging Notifier (Debian python3-oslo.messaging), driven by
 * interop/oslo_publish.py. Needs /usr/bin/python3: the `python3` on PATH may be an interpreter
 * without Debian's packages.
 */
import { execFile, spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const SCRIPT = fileURLToPath(new URL('../interop/oslo_publish.py', import.meta.url))
export const PYTHON = '/usr/bin/python3'

export interface OsloSend {
  readonly seq: number
  readonly ok: boolean
  readonly message_id: string | null
  readonly error: string | null
  readonly durable: boolean
  readonly timestamp: string
}

export interface OsloPublish {
  readonly exchange: string
  readonly topic: string
  readonly count: number
  readonly durable?: boolean
  /** oslo's rabbit_quorum_queue. */
  readonly quorum?: boolean
  readonly driver?: 'messagingv2' | 'messaging'
  readonly eventType?: string
  readonly payload?: unknown
  /** oslo's kombu_compression (kombu names: gzip, bzip2, xz, brotli). */
  readonly compression?: string
  /** Other [oslo_messaging_rabbit] options, as oslo's configuration file would give them. */
  readonly rabbit?: Readonly<Record<string, string>>
}

/** Why oslo.messaging cannot run here, or undefined when it can (probed once). */
let probed: { readonly reason: string | undefined } | undefined
export const osloUnavailable = (): string | undefined => {
  probed ??= {
    reason: !existsSync(PYTHON)
      ? `${PYTHON} not found`
      : spawnSync(PYTHON, ['-c', 'import oslo_messaging'], { timeout: 30_000 }).status !== 0
        ? `${PYTHON} cannot import oslo_messaging (apt-get install python3-oslo.messaging)`
        : undefined,
  }
  return probed.reason
}

export const osloPublish = (o: OsloPublish, amqpUrl = 'rabbit://guest:guest@127.0.0.1:5672/'): Promise<{ code: number; sends: OsloSend[]; stderr: string }> => {
  const args = [SCRIPT, '--url', amqpUrl, '--exchange', o.exchange, '--topic', o.topic, '--count', String(o.count), '--quiet']
  if (o.durable) args.push('--durable')
  if (o.quorum) args.push('--quorum')
  if (o.driver) args.push('--driver', o.driver)
  if (o.eventType) args.push('--event-type', o.eventType)
  if (o.payload !== undefined) args.push('--payload', JSON.stringify(o.payload))
  if (o.compression !== undefined) args.push('--compression', o.compression)
  for (const [k, v] of Object.entries(o.rabbit ?? {})) args.push('--set', `${k}=${v}`)
  return new Promise((resolve) => {
    execFile(PYTHON, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      const sends = stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as OsloSend)
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, sends, stderr })
    })
  })
}

const LISTEN_SCRIPT = fileURLToPath(new URL('../interop/oslo_listen.py', import.meta.url))

/** A notification as oslo's listener dispatched it (interop/oslo_listen.py). */
export interface OsloReceived {
  /** The endpoint method it was dispatched to: the message's priority. */
  readonly method: string
  readonly publisher_id: string | null
  readonly event_type: string
  readonly message_id: string
  readonly timestamp: string
  readonly payload: unknown
}

/**
 * The real oslo.messaging notification listener on `<topic>.<priority>` of `exchange` (declared
 * as oslo declares them), with endpoint methods `methods`. `ready` resolves once it consumes;
 * `done` once it has dispatched `count` notifications or heard nothing for `idleSeconds`.
 */
export const osloListen = (o: {
  readonly exchange: string
  readonly topic: string
  readonly count: number
  readonly durable?: boolean
  readonly methods?: readonly string[]
  readonly idleSeconds?: number
  readonly amqpUrl?: string
}): { ready: Promise<void>; done: Promise<{ code: number | null; received: OsloReceived[]; stderr: string }>; kill: () => void } => {
  const args = [LISTEN_SCRIPT, '--url', o.amqpUrl ?? 'rabbit://guest:guest@127.0.0.1:5672/', '--exchange', o.exchange, '--topic', o.topic, '--count', String(o.count), '--idle', String(o.idleSeconds ?? 30)]
  if (o.durable) args.push('--durable')
  if (o.methods) args.push('--methods', o.methods.join(','))
  const child = spawn(PYTHON, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  let readyNow: () => void = () => {}
  const ready = new Promise<void>((resolve) => (readyNow = resolve))
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d
    if (out.startsWith('ready\n')) readyNow()
  })
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
  const done = new Promise<{ code: number | null; received: OsloReceived[]; stderr: string }>((resolve) => {
    child.on('close', (code) => {
      readyNow()
      const received = out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as OsloReceived)
      resolve({ code, received, stderr: err })
    })
  })
  return { ready, done, kill: () => void child.kill('SIGKILL') }
}
