/**
 * The EventStoreDB mirror: `vitrage-persistor mirror` alone, or inside `run` with --mirror-url.
 * The mirror package (and the EventStoreDB client with it) is loaded only when a URL is given.
 */
import { type Logger, makeScrubber, redactUrl, secretsOf } from '@vitrage-persistor/core'
import type { MirrorStatus } from '@vitrage-persistor/mirror-eventstore'
import type { PgEventStore } from '@vitrage-persistor/store-postgres'
import { Gauge, type Registry } from 'prom-client'
import { type CommandInput, type CommandSpec, command, type Io } from '../command.js'
import type { Config, SettingKey } from '../config.js'
import { json, listenOrReport } from '../http.js'
import { createLogger } from '../logger.js'
import { unrecoverableDatabase } from '../resources.js'
import { stopSignal } from '../signals.js'

/**
 * Checks --mirror-url with the EventStoreDB client's own parser before anything starts: a
 * string it cannot use is a usage error (exit 2). Its warnings are logged (scrubbed) by the
 * mirror when it creates the client (the client would print them, password included).
 */
export const checkMirrorUrl = async (program: string, url: string, io: Io, scrub: (s: string) => string): Promise<boolean> => {
  const { checkConnectionString } = await import('@vitrage-persistor/mirror-eventstore')
  const checked = checkConnectionString(url)
  if (checked._tag === 'Right') return true
  io.err(scrub(`vitrage-persistor ${program}: --mirror-url ${redactUrl(url)}: ${checked.left}\n`))
  return false
}

export interface RunningMirror {
  readonly status: () => MirrorStatus
  readonly close: () => Promise<void>
}

export interface MirrorSettings {
  readonly mirrorUrl: string
  readonly mirrorStreamPerType: boolean
  readonly mirrorStream: string
}

/** Starts the mirror over `store` (which it does not own); its metrics go to `registry`. */
export const startMirror = async (settings: MirrorSettings, store: PgEventStore, log: Logger, registry: Registry, scrub: (s: string) => string): Promise<RunningMirror> => {
  const { EventStoreMirror } = await import('@vitrage-persistor/mirror-eventstore')
  const registers = [registry]
  const gauges = {
    position: new Gauge({ name: 'vitrage_persistor_mirror_position', help: 'Last event id mirrored to EventStoreDB.', registers }),
    lagEvents: new Gauge({ name: 'vitrage_persistor_mirror_lag_events', help: 'Events stored but not yet mirrored.', registers }),
    lagSeconds: new Gauge({ name: 'vitrage_persistor_mirror_lag_seconds', help: 'Age of the oldest event not yet mirrored (0 when caught up).', registers }),
  }
  const mirror = new EventStoreMirror(
    {
      reader: store,
      checkpoints: store,
      signal: store,
      logger: log,
      scrub,
      onProgress: (p) => {
        gauges.position.set(p.position)
        gauges.lagEvents.set(p.lagEvents)
        gauges.lagSeconds.set(p.lagSeconds)
      },
    },
    { url: settings.mirrorUrl, streamPerType: settings.mirrorStreamPerType, stream: settings.mirrorStream },
  )
  mirror.start()
  log.info({ url: redactUrl(settings.mirrorUrl), streamPerType: settings.mirrorStreamPerType, stream: settings.mirrorStream }, 'mirroring to EventStoreDB')
  return { status: () => mirror.status(), close: () => mirror.close() }
}

const MIRROR_SETTINGS = ['databaseUrl', 'logLevel', 'mirrorUrl', 'mirrorStreamPerType', 'mirrorStream', 'httpPort', 'httpHost'] as const

const mirrorCommand = async (config: Config<(typeof MIRROR_SETTINGS)[number]>, _input: CommandInput, io: Io): Promise<number> => {
  if (config.mirrorUrl === '') {
    io.err('vitrage-persistor mirror: --mirror-url (or PERSISTOR_MIRROR_URL) is required\n')
    return 2
  }
  const scrub = makeScrubber(secretsOf([config.databaseUrl, config.mirrorUrl]))
  if (!(await checkMirrorUrl('mirror', config.mirrorUrl, io, scrub))) return 2
  const stop = stopSignal()
  try {
    const log = createLogger(config.logLevel, scrub)
    const { PgEventStore } = await import('@vitrage-persistor/store-postgres')
    const { Registry, collectDefaultMetrics } = await import('prom-client')
    const store = new PgEventStore({ connectionString: config.databaseUrl, maxConnections: 2, applicationName: 'vitrage-persistor mirror', scrub, logger: log })
    const registry = new Registry()
    collectDefaultMetrics({ register: registry })
    let mirror: RunningMirror | undefined
    const listening = await listenOrReport(io, 'mirror', config.httpPort, config.httpHost, {
      '/metrics': async () => ({ status: 200, contentType: registry.contentType, body: await registry.metrics() }),
      '/healthz': () => json(200, { status: 'ok' }),
      // Ready while the latest catch-up succeeded: an unreachable EventStoreDB or database, or
      // events pruned before they were copied, show here with the reason (already scrubbed).
      '/readyz': () => {
        const s = mirror?.status() ?? { state: 'starting' as const }
        if (s.state === 'mirroring') return json(200, { status: 'ready', position: s.position })
        if (s.state === 'retrying') return json(503, { status: 'retrying', reason: scrub(s.failure.message), kind: s.failure.kind, ...(s.failure.code ? { code: s.failure.code } : {}) })
        return json(503, { status: 'starting' })
      },
    })
    if (!listening.ok) {
      await store.close()
      return 1
    }
    const http = listening.server
    if (await unrecoverableDatabase(io, 'mirror', config.databaseUrl, store, stop.received)) {
      await http?.close()
      await store.close()
      return 1
    }
    try {
      mirror = await startMirror(config, store, log, registry, scrub)
    } catch (e) {
      io.err(`vitrage-persistor mirror: --mirror-url: ${scrub(e instanceof Error ? e.message : String(e))}\n`)
      await http?.close()
      await store.close()
      return 1
    }
    const signal = await stop.received
    await mirror.close()
    await http?.close()
    await store.close()
    const s = mirror.status()
    log.info({ signal, ...('position' in s ? { position: s.position } : {}) }, 'mirror stopped')
    return 0
  } finally {
    stop.release()
  }
}

export const mirrorCommands: readonly CommandSpec<SettingKey>[] = [
  command({
    path: ['mirror'],
    summary: 'mirror the event log to EventStoreDB (checkpointed, in order, exactly once) until SIGTERM',
    keys: MIRROR_SETTINGS,
    action: mirrorCommand,
    claimsSignals: () => true,
  }),
]
