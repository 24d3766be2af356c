/**
 * `vitrage-persistor status`: where the log, its readers and the broker stand, in one look, and
 * what needs an operator (`problems`). Exit 0 when nothing does, 1 otherwise (also when the
 * database or the broker cannot be read), so a script or a probe can run it as a check.
 */
import { makeScrubber, redactUrl, secretsOf } from '@vitrage-persistor/core'
import { queueStates, topologyNames } from '@vitrage-persistor/ingest'
import { GRAPH_SNAPSHOT_KIND } from '@vitrage-persistor/projections'
import { type CheckpointInfo, type HeadEvent, migrationState } from '@vitrage-persistor/store-postgres'
import { Option } from 'commander'
import * as E from 'fp-ts/lib/Either.js'
import { type CommandInput, type CommandSpec, command, type Io } from '../command.js'
import type { Config, SettingKey } from '../config.js'
import { chooseFormat, formatOption, printJson } from '../output.js'
import { openStore } from '../resources.js'

const STATUS_SETTINGS = ['databaseUrl', 'amqpUrl', 'exchange', 'topic', 'queue', 'compatQueue'] as const
type StatusConfig = Config<(typeof STATUS_SETTINGS)[number]>

/** A checkpoint behind the head that has not moved for this long is reported: its reader stopped. */
export const STALE_CHECKPOINT_MS = 10 * 60_000
/** Stale checkpoints named one by one; past this many they are counted in one problem. */
const STALE_NAMED = 3
/** Checkpoints the table shows (the furthest behind first); JSON has them all. */
const TABLE_CHECKPOINTS = 20

export type DatabaseStatus =
  | {
      readonly ok: true
      readonly pendingMigrations: readonly string[]
      /** Migrations the database has that this version does not know (a newer one applied them). */
      readonly unknownMigrations: readonly string[]
      /** A session applying migrations now (review 60: status said "run migrate" meanwhile). */
      readonly applyingPid?: number
      readonly events: { readonly prunedBelow: number; readonly head: number; readonly newest: HeadEvent | null }
      readonly checkpoints: ReadonlyArray<CheckpointInfo & { readonly behind: number }>
      readonly snapshots: {
        readonly kept: number
        readonly newest: { readonly eventId: number; readonly createdAt: string; readonly behind: number } | null
        /** Event ids of snapshots whose event the log no longer holds (another message there, or none). */
        readonly notOfThisLog: readonly number[]
      }
    }
  | { readonly ok: false; readonly error: string; readonly pendingMigrations?: readonly string[] }

export type BrokerStatus =
  | {
      readonly ok: true
      readonly queue: string
      /** Undefined (absent from JSON) when the queue does not exist. */
      readonly ready?: number
      readonly consumers?: number
      readonly deadLetterQueue: string
      readonly deadLetters?: number
      /**
       * oslo's own queue beside the persistor's (not in --compat-queue, where it is the one
       * consumed): it fills while nothing reads it (docs/operations.md, "Broker topology").
       * Undefined fields when it does not exist.
       */
      readonly osloQueue?: { readonly name: string; readonly ready?: number; readonly consumers?: number }
    }
  | { readonly ok: false; readonly error: string }

/** What needs an operator, in words (pure). */
export const problemsOf = (database: DatabaseStatus, broker: BrokerStatus | undefined, now: Date): string[] => {
  const problems: string[] = []
  // Pending migrations first: when a later read failed, they are usually why (a missing table).
  const pending = database.pendingMigrations ?? []
  const applying = database.ok ? database.applyingPid : undefined
  if (pending.length > 0) {
    problems.push(
      applying === undefined
        ? `migrations pending: ${pending.join(', ')} (run \`vitrage-persistor migrate\`)`
        : `migrations pending: ${pending.join(', ')}, being applied now (server process ${applying} holds the migration lock: another instance's run or migrate; wait for it)`,
    )
  }
  if (!database.ok) problems.push(`database: ${database.error}`)
  else {
    if (database.unknownMigrations.length > 0) {
      problems.push(`the database has migrations this version does not know (${database.unknownMigrations.join(', ')}): a newer version applied them (rolled back, or running beside one?); this version runs without what they add`)
    }
    // Positions past the newest event: the log lost events its readers had (a restore from a
    // backup or a failover to a replica without them, of the event table alone); such a reader
    // skips the events that take those ids again.
    const head = database.events.head
    const ahead = database.checkpoints.filter((c) => c.position > head)
    for (const c of ahead.slice(0, STALE_NAMED)) {
      problems.push(`checkpoint ${c.name} is at event ${c.position}, past the newest stored event (${head}): the log lost events it had read (restored or failed over?); it would skip the next ${c.position - head} (docs/operations.md, "Restore and failover")`)
    }
    if (ahead.length > STALE_NAMED) problems.push(`${ahead.length - STALE_NAMED} more checkpoints are past the newest stored event`)
    const snapshot = database.snapshots.newest
    if (snapshot !== null && snapshot.eventId > head) {
      problems.push(`the newest graph snapshot is at event ${snapshot.eventId}, past the newest stored event (${head}): it holds events the log lost (docs/operations.md, "Restore and failover")`)
    }
    // At or below the head (one past it is named above): the event table restored or failed
    // over without its snapshots, ids handed out again. Readers pass them over, prune does not
    // count them; they only take the place of snapshots of this log in --keep-snapshots.
    const foreign = database.snapshots.notOfThisLog.filter((id) => id <= head)
    if (foreign.length > 0) {
      problems.push(
        `${foreign.length === 1 ? 'the graph snapshot at event' : `${foreign.length} graph snapshots, at events`} ${foreign.slice(0, STALE_NAMED).join(', ')}${foreign.length > STALE_NAMED ? ', ...' : ''} ${foreign.length === 1 ? 'is' : 'are'} not of this log: the log holds another message there (the event table restored or failed over without its snapshots); graph, follow and prune pass ${foreign.length === 1 ? 'it' : 'them'} over (docs/operations.md, "Restore and failover")`,
      )
    }
    const stale = database.checkpoints
      .map((c) => ({ ...c, idleMs: now.getTime() - Date.parse(c.updatedAt) }))
      .filter((c) => c.behind > 0 && c.idleMs > STALE_CHECKPOINT_MS)
      .sort((a, b) => b.behind - a.behind)
    for (const c of stale.slice(0, STALE_NAMED)) {
      problems.push(`checkpoint ${c.name} is ${c.behind} events behind and has not moved for ${Math.floor(c.idleMs / 60_000)} min (its reader stopped? it holds back prune)`)
    }
    if (stale.length > STALE_NAMED) problems.push(`${stale.length - STALE_NAMED} more checkpoints are behind and have not moved for ${STALE_CHECKPOINT_MS / 60_000} min`)
  }
  if (broker !== undefined) {
    if (!broker.ok) problems.push(`broker: ${broker.error}`)
    else {
      if (broker.consumers === undefined) problems.push(`queue ${broker.queue} does not exist (the persistor declares it when it starts)`)
      else if (broker.consumers === 0) problems.push(`nothing consumes ${broker.queue} (is \`vitrage-persistor run\` up?)`)
      if (broker.deadLetters !== undefined && broker.deadLetters > 0) {
        problems.push(`${broker.deadLetters} dead letters in ${broker.deadLetterQueue} (\`vitrage-persistor dead-letters list\`)`)
      }
    }
  }
  return problems
}

const databaseStatus = async (config: StatusConfig): Promise<DatabaseStatus> => {
  const { store, scrub } = openStore(config.databaseUrl, 'vitrage-persistor status', 1)
  let pendingNow: readonly string[] | undefined
  const fail = (message: string): DatabaseStatus => ({
    ok: false,
    error: `${redactUrl(config.databaseUrl)}: ${message}`,
    ...(pendingNow !== undefined ? { pendingMigrations: pendingNow } : {}),
  })
  try {
    const state = await migrationState(config.databaseUrl, scrub)()
    if (E.isLeft(state)) return fail(state.left.message)
    const pending = state.right.pending
    pendingNow = pending
    // The head last: a reader moves its checkpoint only to events already stored, so a head read
    // after the checkpoints is at or past each of them unless the log really lost events (read
    // first, a checkpoint moving meanwhile looked past it).
    const prunedBelow = await store.prunedBelow()()
    if (E.isLeft(prunedBelow)) return fail(prunedBelow.left.message)
    const checkpoints = await store.listCheckpoints()()
    if (E.isLeft(checkpoints)) return fail(checkpoints.left.message)
    const snapshots = await store.listSnapshots(GRAPH_SNAPSHOT_KIND)()
    if (E.isLeft(snapshots)) return fail(snapshots.left.message)
    const foreign = await store.foreignSnapshots(GRAPH_SNAPSHOT_KIND)()
    if (E.isLeft(foreign)) return fail(foreign.left.message)
    const head = await store.headEvent()()
    if (E.isLeft(head)) return fail(head.left.message)
    const headId = head.right?.id ?? 0
    const newest = snapshots.right.at(-1)
    return {
      ok: true,
      pendingMigrations: pending,
      unknownMigrations: state.right.unknown,
      ...(state.right.applyingPid === undefined ? {} : { applyingPid: state.right.applyingPid }),
      events: { prunedBelow: prunedBelow.right, head: headId, newest: head.right ?? null },
      checkpoints: checkpoints.right.map((c) => ({ ...c, behind: Math.max(0, headId - c.position) })),
      snapshots: {
        kept: snapshots.right.length,
        newest: newest === undefined ? null : { eventId: newest.eventId, createdAt: newest.createdAt, behind: Math.max(0, headId - newest.eventId) },
        notOfThisLog: foreign.right.map((m) => m.eventId),
      },
    }
  } finally {
    await store.close()
  }
}

const brokerStatus = async (config: StatusConfig): Promise<BrokerStatus> => {
  const { consumeQueue, deadLetterQueue, osloQueue } = topologyNames({ exchange: config.exchange, topic: config.topic, queue: config.queue, compatQueue: config.compatQueue, osloDurable: false })
  const queues = config.compatQueue ? [consumeQueue, deadLetterQueue] : [consumeQueue, deadLetterQueue, osloQueue]
  const r = await queueStates(config.amqpUrl, queues, makeScrubber(secretsOf([config.amqpUrl])))
  if (E.isLeft(r)) return { ok: false, error: `${redactUrl(config.amqpUrl)}: ${r.left.message}` }
  const [queue, dead, oslo] = r.right
  return {
    ok: true,
    queue: consumeQueue,
    ...(queue?.ready !== undefined ? { ready: queue.ready, consumers: queue.consumers as number } : {}),
    deadLetterQueue,
    ...(dead?.ready !== undefined ? { deadLetters: dead.ready } : {}),
    ...(config.compatQueue ? {} : { osloQueue: { name: osloQueue, ...(oslo?.ready !== undefined ? { ready: oslo.ready, consumers: oslo.consumers as number } : {}) } }),
  }
}

const ago = (iso: string, now: Date): string => {
  const s = Math.max(0, Math.round((now.getTime() - Date.parse(iso)) / 1000))
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${(s / 3600).toFixed(1)} h ago`
}

const printLines = (io: Io, database: DatabaseStatus, broker: BrokerStatus | undefined, problems: readonly string[], now: Date): void => {
  const lines: Array<[string, string]> = []
  if (!database.ok) {
    if (database.pendingMigrations !== undefined) lines.push(['schema', database.pendingMigrations.length === 0 ? 'up to date' : `pending: ${database.pendingMigrations.join(', ')}`])
    lines.push(['database', `unreadable: ${database.error}`])
  }
  else {
    const { events } = database
    lines.push(['schema', database.pendingMigrations.length === 0 ? 'up to date' : `pending: ${database.pendingMigrations.join(', ')}`])
    lines.push([
      'events',
      events.newest === null
        ? `none stored${events.prunedBelow > 1 ? ` (pruned below ${events.prunedBelow})` : ''}`
        : `ids ${events.prunedBelow} to ${events.head}; the newest stored ${ago(events.newest.persistedAt, now)} (collected ${events.newest.collectorTimestamp})`,
    ])
    const furthest = [...database.checkpoints].sort((a, b) => b.behind - a.behind)
    for (const c of furthest.slice(0, TABLE_CHECKPOINTS)) lines.push([`checkpoint ${c.name}`, `at ${c.position} (${c.behind} behind), moved ${ago(c.updatedAt, now)}`])
    if (furthest.length > TABLE_CHECKPOINTS) lines.push(['', `and ${furthest.length - TABLE_CHECKPOINTS} more checkpoints (--format json lists them all)`])
    const s = database.snapshots
    lines.push(['graph snapshots', s.newest === null ? 'none' : `${s.kept} kept; the newest at event ${s.newest.eventId} (${s.newest.behind} behind), taken ${ago(s.newest.createdAt, now)}`])
  }
  if (broker !== undefined) {
    if (!broker.ok) lines.push(['broker', `unreadable: ${broker.error}`])
    else {
      lines.push(['queue', broker.consumers === undefined ? `${broker.queue}: does not exist` : `${broker.queue}: ${broker.ready} ready, ${broker.consumers} consumer${broker.consumers === 1 ? '' : 's'}`])
      lines.push(['dead letters', broker.deadLetters === undefined ? `${broker.deadLetterQueue}: does not exist` : `${broker.deadLetterQueue}: ${broker.deadLetters}`])
      const oslo = broker.osloQueue
      if (oslo !== undefined && oslo.ready !== undefined) {
        // Not a problem by itself (a max-length policy may hold it), but a number to watch.
        lines.push(["oslo's queue", `${oslo.name}: ${oslo.ready} ready, ${oslo.consumers} consumer${oslo.consumers === 1 ? '' : 's'}${oslo.consumers === 0 && oslo.ready > 0 ? ' (nothing reads it: cap it with a policy, see docs/operations.md "Broker topology")' : ''}`])
      }
    }
  }
  lines.push(['problems', problems.length === 0 ? 'none' : problems[0] as string])
  for (const p of problems.slice(1)) lines.push(['', p])
  let width = 0
  for (const [k] of lines) width = Math.max(width, k.length)
  for (const [k, v] of lines) io.out(`${k.padEnd(width)}  ${v}\n`)
}

const status = async (config: StatusConfig, input: CommandInput, io: Io): Promise<number> => {
  const withBroker = input.options['broker'] !== false
  const [database, broker] = await Promise.all([databaseStatus(config), withBroker ? brokerStatus(config) : Promise.resolve(undefined)])
  const now = new Date()
  const problems = problemsOf(database, broker, now)
  if (chooseFormat(input.options, io) === 'json') printJson(io, { database, ...(broker !== undefined ? { broker } : {}), problems })
  else printLines(io, database, broker, problems, now)
  return problems.length === 0 ? 0 : 1
}

export const statusCommands: readonly CommandSpec<SettingKey>[] = [
  command({
    path: ['status'],
    summary: 'where the log, its readers (checkpoints, snapshots) and the queues stand, and what needs an operator (exit 1 if anything does)',
    keys: STATUS_SETTINGS,
    options: [formatOption(), new Option('--no-broker', 'the database only')],
    action: status,
  }),
]
