/**
 * Configuration: the one module that reads the environment. Every setting is a flag and an
 * environment variable; the flag wins, then the variable, then the documented default. Values
 * are parsed and validated here, so the rest of the program receives typed options, and a bad
 * value is reported with its flag, its variable and what was wrong before anything starts.
 */
import { isIP } from 'node:net'
import { userInfo } from 'node:os'
import * as E from 'fp-ts/lib/Either.js'

export interface Setting<T> {
  /** Flag name without the leading dashes. */
  readonly flag: string
  readonly env: string
  readonly describe: string
  readonly default: T
  /** A switch takes no value on the command line (`--compat-queue`). */
  readonly switch?: boolean
  /** A switch that is on by default: what its `--no-` form does (the help shows that form). */
  readonly describeOff?: string
  /** Connection strings: shown redacted, scrubbed from logs. */
  readonly secret?: boolean
  readonly parse: (raw: string) => E.Either<string, T>
}

const integer =
  (min: number, max: number) =>
  (raw: string): E.Either<string, number> => {
    const n = Number(raw.trim())
    return /^-?\d+$/.test(raw.trim()) && n >= min && n <= max ? E.right(n) : E.left(`must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`)
  }

const bool = (raw: string): E.Either<string, boolean> => {
  const v = raw.trim().toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(v)) return E.right(true)
  if (['0', 'false', 'no', 'off'].includes(v)) return E.right(false)
  return E.left(`must be true or false (or 1/0, yes/no, on/off), got ${JSON.stringify(raw)}`)
}

const article = (word: string): string => (/^[aeiou]/i.test(word) ? 'an' : 'a')

/** A URL of one of these protocols (the text itself is never echoed: it may hold a password). */
export const url =
  (protocols: readonly string[]) =>
  (raw: string): E.Either<string, string> => {
    try {
      const u = new URL(raw)
      // `amqp:foo` parses, as a URL without a host: amqplib would connect to localhost.
      if (protocols.includes(u.protocol) && !raw.slice(u.protocol.length).startsWith('//')) return E.left(`must be ${article(u.protocol)} ${u.protocol}// URL`)
      return protocols.includes(u.protocol)
        ? E.right(raw)
        : E.left(`must be ${article(protocols[0] ?? '')} ${protocols.map((p) => `${p}//`).join(' or ')} URL, got ${article(u.protocol)} ${u.protocol}// URL`)
    } catch {
      // The raw text may hold a password: never echo it.
      return E.left('is not a URL')
    }
  }

/**
 * An AMQP name (at most 255 bytes) that still is one with `suffix` appended: the topic gets
 * `.info` (oslo's queue), the queue `.dlx` and `.dead`.
 */
const amqpName =
  (suffix = '') =>
  (raw: string): E.Either<string, string> => {
    const max = 255 - suffix.length
    return raw.length > 0 && Buffer.byteLength(raw, 'utf8') <= max && !/[\s]/.test(raw)
      ? E.right(raw)
      : E.left(`must be a non-empty AMQP name without spaces of at most ${max} bytes${suffix ? ` (${suffix} is appended to it)` : ''}, got ${JSON.stringify(raw)}`)
  }

const name = amqpName()

/** An EventStoreDB stream name: non-empty, not a system stream (`$…`), printable. */
const streamName = (raw: string): E.Either<string, string> =>
  raw.length > 0 && !raw.startsWith('$') && !/[\s]/.test(raw) && Buffer.byteLength(raw, 'utf8') <= 1000
    ? E.right(raw)
    : E.left(`must be a non-empty EventStoreDB stream name without spaces, not starting with $ (system streams), got ${JSON.stringify(raw)}`)

/** An IP address or a host name (RFC 1123): checked before anything starts, not at listen time. */
const hostName = (raw: string): E.Either<string, string> =>
  isIP(raw) !== 0 || (raw.length <= 253 && /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(raw))
    ? E.right(raw)
    : E.left(`must be an IP address or a host name, got ${JSON.stringify(raw)}`)

const oneOf =
  <T extends string>(values: readonly T[]) =>
  (raw: string): E.Either<string, T> =>
    (values as readonly string[]).includes(raw) ? E.right(raw as T) : E.left(`must be one of ${values.join(', ')}, got ${JSON.stringify(raw)}`)

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

/**
 * LOG_LEVEL is a name many programs share in one environment (a container's, a unit's), in their
 * spellings: `INFO`, `Warning`. Read in any case, with `warning` for `warn`; anything else is
 * refused with the list (review 56: `LOG_LEVEL=INFO` stopped even `history counts`, exit 2).
 */
const logLevel = (raw: string): E.Either<string, (typeof LOG_LEVELS)[number]> => {
  const lower = raw.trim().toLowerCase()
  return E.mapLeft(() => `must be one of ${LOG_LEVELS.join(', ')} (any case; warning for warn), got ${JSON.stringify(raw)}`)(oneOf(LOG_LEVELS)(lower === 'warning' ? 'warn' : lower))
}

export const settings = {
  amqpUrl: {
    flag: 'amqp-url',
    env: 'AMQP_URL',
    describe: 'RabbitMQ URL (amqp:// or amqps://; ?heartbeat=N is honoured)',
    default: 'amqp://guest:guest@localhost:5672/',
    secret: true,
    parse: url(['amqp:', 'amqps:']),
  },
  databaseUrl: {
    flag: 'database-url',
    env: 'DATABASE_URL',
    describe: 'PostgreSQL URL (sslmode and other libpq parameters pass through)',
    default: 'postgres://localhost:5432/vitrage_persistor',
    secret: true,
    // The database is named, not left to libpq's default (the user's name): migrate creates it.
    parse: (raw: string) =>
      E.flatMap(url(['postgres:', 'postgresql:'])(raw), (u) =>
        new URL(u).pathname.replace(/^\//, '') === '' ? E.left('names no database (postgres://host:5432/<database>)') : E.right(u),
      ),
  },
  exchange: { flag: 'exchange', env: 'PERSISTOR_EXCHANGE', describe: "oslo.messaging control exchange Vitrage publishes to", default: 'vitrage', parse: name },
  topic: { flag: 'topic', env: 'PERSISTOR_TOPIC', describe: 'notification topic (routing keys <topic>.<priority>)', default: 'vitrage_persistor', parse: amqpName('.info') },
  queue: {
    flag: 'queue',
    env: 'PERSISTOR_QUEUE',
    describe: "the persistor's own durable queue; dead letters go to <queue>.dead",
    default: 'vitrage_persistor.persistor',
    parse: amqpName('.dead'),
  },
  compatQueue: {
    flag: 'compat-queue',
    env: 'PERSISTOR_COMPAT_QUEUE',
    describe: "consume oslo's own <topic>.info queue as oslo declares it (drop-in for Vitrage's persistor)",
    default: false,
    switch: true,
    parse: bool,
  },
  amqpDurableQueues: {
    flag: 'amqp-durable-queues',
    env: 'PERSISTOR_AMQP_DURABLE_QUEUES',
    describe: "the deployment's oslo.messaging amqp_durable_queues: how to declare oslo's exchange and queue if they do not exist yet",
    default: false,
    switch: true,
    parse: bool,
  },
  amqpQuorumQueues: {
    flag: 'amqp-quorum-queues',
    env: 'PERSISTOR_AMQP_QUORUM_QUEUES',
    describe: "the deployment's oslo.messaging rabbit_quorum_queue: declare oslo's queue (if it does not exist yet) as a quorum queue, and its exchange durable",
    default: false,
    switch: true,
    parse: bool,
  },
  amqpAutoDelete: {
    flag: 'amqp-auto-delete',
    env: 'PERSISTOR_AMQP_AUTO_DELETE',
    describe: "the deployment's oslo.messaging amqp_auto_delete: declare oslo's exchange and queue (if they do not exist yet) auto-delete",
    default: false,
    switch: true,
    parse: bool,
  },
  amqpQuorumDeliveryLimit: {
    flag: 'amqp-quorum-delivery-limit',
    env: 'PERSISTOR_AMQP_QUORUM_DELIVERY_LIMIT',
    describe: "the deployment's oslo.messaging rabbit_quorum_delivery_limit (0: unset): x-delivery-limit of oslo's quorum queue, if the persistor declares it",
    default: 0,
    parse: integer(0, 2 ** 31 - 1),
  },
  amqpQuorumMaxMemoryLength: {
    flag: 'amqp-quorum-max-memory-length',
    env: 'PERSISTOR_AMQP_QUORUM_MAX_MEMORY_LENGTH',
    describe: "the deployment's oslo.messaging rabbit_quroum_max_memory_length (0: unset): x-max-in-memory-length of oslo's quorum queue, if the persistor declares it",
    default: 0,
    parse: integer(0, 2 ** 31 - 1),
  },
  amqpQuorumMaxMemoryBytes: {
    flag: 'amqp-quorum-max-memory-bytes',
    env: 'PERSISTOR_AMQP_QUORUM_MAX_MEMORY_BYTES',
    describe: "the deployment's oslo.messaging rabbit_quroum_max_memory_bytes (0: unset): x-max-in-memory-bytes of oslo's quorum queue, if the persistor declares it",
    default: 0,
    parse: integer(0, Number.MAX_SAFE_INTEGER),
  },
  prefetch: {
    flag: 'prefetch',
    env: 'PERSISTOR_PREFETCH',
    describe: 'unacked messages in flight (bounds memory: prefetch x message size)',
    default: 2000,
    parse: integer(1, 65535),
  },
  batchSize: { flag: 'batch-size', env: 'PERSISTOR_BATCH_SIZE', describe: 'messages per database transaction', default: 1000, parse: integer(1, 65535) },
  batchMaxWaitMs: {
    flag: 'batch-max-wait-ms',
    env: 'PERSISTOR_BATCH_MAX_WAIT_MS',
    describe: "longest a message waits for its batch to fill",
    default: 50,
    parse: integer(0, 60_000),
  },
  maxMessageBytes: {
    flag: 'max-message-bytes',
    env: 'PERSISTOR_MAX_MESSAGE_BYTES',
    describe: 'larger bodies (a compressed one: also once decompressed) are dead-lettered (body-too-large)',
    default: 1024 * 1024,
    parse: integer(64, 128 * 1024 * 1024),
  },
  httpPort: {
    flag: 'http-port',
    env: 'PERSISTOR_HTTP_PORT',
    describe: 'port of /metrics, /healthz and /readyz (follow: also /graph and /position; 0: disabled)',
    default: 9464,
    parse: integer(0, 65535),
  },
  httpHost: { flag: 'http-host', env: 'PERSISTOR_HTTP_HOST', describe: 'address the HTTP server listens on', default: '0.0.0.0', parse: hostName },
  shutdownTimeoutMs: {
    flag: 'shutdown-timeout-ms',
    env: 'PERSISTOR_SHUTDOWN_TIMEOUT_MS',
    describe: 'on SIGTERM, how long to wait for work in flight (run: held messages committed and acked; replay: published messages confirmed)',
    default: 30_000,
    parse: integer(0, 3_600_000),
  },
  logLevel: { flag: 'log-level', env: 'LOG_LEVEL', describe: 'log level', default: 'info', parse: logLevel },
  mirrorUrl: {
    flag: 'mirror-url',
    env: 'PERSISTOR_MIRROR_URL',
    describe: 'mirror every stored event to this EventStoreDB/KurrentDB (esdb://host:2113?tls=false); off when empty',
    default: '',
    secret: true,
    parse: (raw: string) =>
      raw === '' || /^(esdb|esdb\+discover|kurrentdb|kurrentdb\+discover):\/\/[^/?,\s]+/.test(raw)
        ? E.right(raw)
        : E.left(
            /^(esdb|esdb\+discover|kurrentdb|kurrentdb\+discover):\/\//.test(raw)
              ? 'names no host: esdb://host:2113?tls=false (or esdb+discover://, kurrentdb://)'
              : 'must be an esdb:// (or esdb+discover://, kurrentdb://) connection string',
          ),
  },
  mirrorStreamPerType: {
    flag: 'stream-per-type',
    env: 'PERSISTOR_MIRROR_STREAM_PER_TYPE',
    describe: 'mirror into one stream per event type (<stream>-<event_type>) instead of one stream',
    default: false,
    switch: true,
    parse: bool,
  },
  mirrorStream: { flag: 'mirror-stream', env: 'PERSISTOR_MIRROR_STREAM', describe: 'mirror stream name (or prefix, with --stream-per-type)', default: 'vitrage-events', parse: streamName },
  historyProjection: {
    flag: 'history-projection',
    env: 'PERSISTOR_HISTORY_PROJECTION',
    describe: 'maintain the alarm-history tables while running',
    describeOff: 'do not maintain the alarm-history tables while running (leave them to `project history`)',
    default: true,
    switch: true,
    parse: bool,
  },
} satisfies Record<string, Setting<unknown>>

export type Settings = typeof settings
export type SettingKey = keyof Settings
export type Config<K extends SettingKey> = { readonly [P in K]: Settings[P]['default'] }

/** Resolves the named settings from parsed flags and the environment; all errors at once. */
export const resolve = <K extends SettingKey>(
  keys: readonly K[],
  flags: Readonly<Record<string, unknown>>,
  env: Readonly<Record<string, string | undefined>>,
): E.Either<string[], Config<K>> => {
  const errors: string[] = []
  const out: Record<string, unknown> = {}
  for (const key of keys) {
    const s = settings[key] as Setting<unknown>
    const flagValue = flags[camel(s.flag)]
    let raw: string | undefined
    let source: string
    if (flagValue !== undefined) {
      raw = typeof flagValue === 'boolean' ? String(flagValue) : String(flagValue)
      source = `--${s.flag}`
    } else if (env[s.env] !== undefined && env[s.env]?.trim() !== '') {
      // Set but empty (`PERSISTOR_PREFETCH=`, or a compose file's `${UNSET}`) counts as unset.
      raw = env[s.env]
      source = `${s.env} (environment)`
    } else {
      out[key] = s.default
      continue
    }
    const parsed = s.parse(raw as string)
    if (E.isLeft(parsed)) errors.push(`${source}: ${parsed.left}`)
    else out[key] = parsed.right
  }
  if (errors.length > 0) return E.left(errors)
  if (typeof out['databaseUrl'] === 'string') out['databaseUrl'] = withDefaultUser(out['databaseUrl'], env)
  return E.right(out as Config<K>)
}

/**
 * libpq connects as the operating-system user when a URL names none; node-postgres uses $USER
 * only, which is unset under systemd and in many containers. Name the OS user explicitly so the
 * default URL works wherever psql would.
 */
export const withDefaultUser = (databaseUrl: string, env: Readonly<Record<string, string | undefined>>): string => {
  const u = new URL(databaseUrl)
  if (u.username !== '' || env['PGUSER'] !== undefined) return databaseUrl
  u.username = encodeURIComponent(env['USER'] ?? userInfo().username)
  return u.toString()
}

/** commander's property name for a flag. */
export const camel = (flag: string): string => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
