/**
 * The real oslo.messaging Notifier (Debian python3-oslo.messaging), driven by
 * interop/oslo_publish.py. Needs /usr/bin/python3: the `python3` on PATH may be an interpreter
 * without Debian's packages.
 */
import { execFile, spawnSync } from 'node:child_process'
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
