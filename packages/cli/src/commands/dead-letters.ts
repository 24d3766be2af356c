/**
 * `vitrage-persistor dead-letters list|requeue|drop`: what is in `<queue>.dead` and why, sending
 * dead letters back to the persistor once their cause is fixed, and deleting those no fix will
 * store (ingest dead-letters.ts has the guarantees: listing removes nothing; a requeued letter
 * leaves the dead-letter queue only once the persistor's queue has confirmed its copy).
 */
import { makeScrubber, redactUrl, secretsOf } from '@vitrage-persistor/core'
import { DEAD_LETTER_REASONS, type DropFailure, type DropResult, dropDeadLetters, inspectDeadLetters, MAX_INSPECT, requeueDeadLetters, topologyNames } from '@vitrage-persistor/ingest'
import { Option } from 'commander'
import * as E from 'fp-ts/lib/Either.js'
import { type CommandInput, type CommandSpec, command, type Io, UsageError } from '../command.js'
import type { Config, SettingKey } from '../config.js'
import { chooseFormat, formatOption, positiveIntArg, printJson, printTable } from '../output.js'
import { startProgress } from '../progress.js'
import { stopSignal } from '../signals.js'

const DEAD_LETTER_SETTINGS = ['amqpUrl', 'exchange', 'topic', 'queue', 'compatQueue'] as const
type DeadLetterConfig = Config<(typeof DEAD_LETTER_SETTINGS)[number]>

const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

const reasonsArg = (value: unknown): string[] => {
  const reasons = (value as string[] | undefined) ?? []
  for (const r of reasons) {
    if (!DEAD_LETTER_REASONS.includes(r)) throw new UsageError(`--reason: ${JSON.stringify(r)} is not a dead-letter reason; one of ${DEAD_LETTER_REASONS.join(', ')}`)
  }
  return reasons
}

const messageIdsArg = (value: unknown): string[] => {
  const ids = (value as string[] | undefined) ?? []
  for (const id of ids) if (id.trim() === '') throw new UsageError('--message-id: empty')
  return ids
}

const queues = (config: DeadLetterConfig): { consumeQueue: string; deadLetterQueue: string } =>
  topologyNames({ exchange: config.exchange, topic: config.topic, queue: config.queue, compatQueue: config.compatQueue, osloDurable: false })

const reasonCounts = (byReason: Readonly<Record<string, number>>): string =>
  Object.entries(byReason)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([r, n]) => `${r} ${n}`)
    .join(', ')

const list = async (config: DeadLetterConfig, input: CommandInput, io: Io): Promise<number> => {
  const reasons = reasonsArg(input.options['reason'])
  const messageIds = messageIdsArg(input.options['messageId'])
  const limit = positiveIntArg('--limit', input.options['limit']) ?? 100
  // RabbitMQ cannot peek: what is read is held and put back, at a cost to the broker that grows
  // faster than the count (ingest dead-letters.ts).
  if (limit > MAX_INSPECT) throw new UsageError(`--limit: at most ${MAX_INSPECT} (a listing holds what it reads and puts it back), got ${limit}`)
  const format = chooseFormat(input.options, io)
  const { deadLetterQueue } = queues(config)
  const scrub = makeScrubber(secretsOf([config.amqpUrl]))
  const r = await inspectDeadLetters({ amqpUrl: config.amqpUrl, deadLetterQueue, reasons, messageIds, limit, scrub })
  if (E.isLeft(r)) {
    io.err(`vitrage-persistor dead-letters list: ${redactUrl(config.amqpUrl)}: ${r.left.message}\n`)
    return 1
  }
  const { depth, scanned, letters, byReason } = r.right
  if (format === 'json') {
    printJson(io, { queue: deadLetterQueue, depth, scanned, byReason, letters })
    return 0
  }
  printTable(
    io,
    ['position', 'dead_lettered_at', 'reason', 'message_id', 'event_type', 'bytes', 'requeued', 'detail'],
    letters.map((l) => ({
      position: l.position,
      dead_lettered_at: l.deadLetteredAt,
      reason: l.reason,
      message_id: l.messageId,
      event_type: l.eventType,
      bytes: l.bytes,
      requeued: l.requeued,
      detail: l.detail !== null && l.detail.length > 100 ? `${l.detail.slice(0, 99)}…` : l.detail,
    })),
  )
  io.out(`${deadLetterQueue}: ${depth} dead letters; ${scanned} read (${reasonCounts(byReason) || 'none'}), ${letters.length} shown${scanned === MAX_INSPECT && depth > scanned ? ` (a listing reads at most ${MAX_INSPECT})` : ''}\n`)
  return 0
}

/**
 * requeue, or drop: one walk of the dead-letter queue (ingest dead-letters.ts). A drop deletes
 * letters for good, so it names what it deletes: a reason, a message_id, or --all.
 */
const walk = (mode: 'requeue' | 'drop') => async (config: DeadLetterConfig, input: CommandInput, io: Io): Promise<number> => {
  const reasons = reasonsArg(input.options['reason'])
  const messageIds = messageIdsArg(input.options['messageId'])
  const all = input.options['all'] === true
  if (mode === 'drop' && !all && reasons.length === 0 && messageIds.length === 0) {
    throw new UsageError('drop deletes letters for good: name them with --reason or --message-id (repeatable), or --all for every letter')
  }
  if (all && (reasons.length > 0 || messageIds.length > 0)) throw new UsageError('--all cannot be combined with --reason or --message-id')
  const limit = positiveIntArg('--limit', input.options['limit']) ?? Number.MAX_SAFE_INTEGER
  const maxInFlight = positiveIntArg('--max-in-flight', input.options['maxInFlight']) ?? 100
  const { consumeQueue, deadLetterQueue } = queues(config)
  const scrub = makeScrubber(secretsOf([config.amqpUrl]))
  const name = `vitrage-persistor dead-letters ${mode}`
  const done = mode === 'requeue' ? 'requeued' : 'dropped'
  const stop = stopSignal()
  // Ctrl-C or SIGTERM: read no more letters, wait for the broker to confirm the copies published
  // (up to 30 s each), ack their letters. A second one stops the wait; those letters stay.
  const stopping = new AbortController()
  const abandoning = new AbortController()
  let stoppedBy: NodeJS.Signals | undefined
  const again = (): void => abandoning.abort()
  void stop.received.then((s) => {
    stoppedBy = s
    process.on('SIGTERM', again)
    process.on('SIGINT', again)
    stopping.abort()
    io.err(`${name}: stopping (${s}): reading no more letters, waiting for the broker to confirm the copies sent; ${s} again stops the wait\n`)
  })
  const bar = startProgress(io, mode === 'requeue' ? `requeueing ${deadLetterQueue} to ${consumeQueue}` : `dropping from ${deadLetterQueue}`)
  try {
    const options = {
      amqpUrl: config.amqpUrl,
      deadLetterQueue,
      reasons,
      messageIds,
      limit,
      maxInFlight,
      scrub,
      signal: stopping.signal,
      abandon: abandoning.signal,
      onProgress: (p: { scanned: number; requeued: number; depth: number }) => bar.update(p.scanned, Math.max(p.depth, p.scanned), `${p.requeued} ${done}`),
    }
    const r =
      mode === 'requeue'
        ? await requeueDeadLetters({ ...options, targetQueue: consumeQueue })
        : // One report for both walks: a drop's count where a requeue's goes.
          E.bimap(
            ({ dropped, ...rest }: DropFailure) => ({ ...rest, requeued: dropped }),
            ({ dropped, ...rest }: DropResult) => ({ ...rest, requeued: dropped }),
          )(await dropDeadLetters(options))
    bar.finish()
    if (E.isLeft(r)) {
      const { requeued, unconfirmed, acksUnconfirmed } = r.left
      // A copy the broker did not confirm may still have reached the queue, and an ack it did
      // not confirm may not have: either way a letter can be in both queues. Said, with how many
      // at most (the persistor stores a message_id once, so requeueing them again is safe).
      const both =
        mode === 'requeue'
          ? [
              ...(unconfirmed > 0 ? [`${unconfirmed} more copies were sent but not confirmed: they may have reached ${consumeQueue} all the same, and their letters stay in ${deadLetterQueue}`] : []),
              ...(acksUnconfirmed ? [`the broker did not confirm the last acks: letters of the ${requeued} requeued may still be in ${deadLetterQueue} as well`] : []),
            ]
          : acksUnconfirmed
            ? [`the broker did not confirm the last acks: letters of the ${requeued} dropped may still be in ${deadLetterQueue}`]
            : []
      const maybe =
        mode === 'drop'
          ? `; ${[...both, `the letters not dropped are in ${deadLetterQueue}, some perhaps twice (a copy put back at the tail, and the letter itself; the persistor stores a message_id once, so requeueing both is harmless)`].join('; ')}`
          : both.length > 0
            ? `; ${both.join('; ')} (the persistor stores a message_id once, so requeueing them again is safe)`
            : '; no letter was removed without its copy confirmed'
      io.err(`${name}: ${redactUrl(config.amqpUrl)}: ${r.left.message}${stoppedBy !== undefined ? ` (stopping on ${stoppedBy})` : ''}; ${requeued} ${done} before that${maybe}\n`)
      return 1
    }
    const { depth, scanned, requeued, byReason, skipped, stopped, notFound } = r.right
    printJson(io, {
      from: deadLetterQueue,
      ...(mode === 'requeue' ? { to: consumeQueue } : {}),
      ...(depth === undefined ? {} : { depth }),
      scanned,
      [done]: requeued,
      byReason,
      skipped,
      ...(notFound.length > 0 ? { notFound } : {}),
      ...(stopped ? { stopped: stoppedBy } : {}),
    })
    if (stopped) {
      io.err(`${name}: stopped by ${stoppedBy}; ${requeued} ${done}, the rest left in ${deadLetterQueue}\n`)
      return 1
    }
    // Asked for by id and not there (a typo, a letter another run took, one no reason given
    // matched): said, not a quiet success with nothing done.
    if (notFound.length > 0) {
      io.err(`${name}: no dead letter${reasons.length > 0 ? ` with reason ${reasons.join(' or ')}` : ''} has message_id ${notFound.join(', ')} in ${deadLetterQueue}\n`)
      return 1
    }
    return 0
  } finally {
    bar.finish()
    process.off('SIGTERM', again)
    process.off('SIGINT', again)
    stop.release()
  }
}

const reasonOption = (): Option =>
  new Option('--reason <reason>', `only dead letters with this reason (repeatable): ${DEAD_LETTER_REASONS.join(', ')}`).argParser(collect)
const messageIdOption = (): Option => new Option('--message-id <id>', "only the dead letter of this notification's message_id (repeatable; dead-letters list shows them)").argParser(collect)

export const deadLetterCommands: readonly CommandSpec<SettingKey>[] = [
  command({
    path: ['dead-letters', 'list'],
    summary: 'list the dead letters in <queue>.dead with their reasons, without removing any',
    keys: DEAD_LETTER_SETTINGS,
    options: [reasonOption(), messageIdOption(), new Option('--limit <n>', `show at most n (default 100, at most ${MAX_INSPECT}; at most ${MAX_INSPECT} letters are read)`), formatOption()],
    action: list,
  }),
  command({
    path: ['dead-letters', 'requeue'],
    summary: "send dead letters back to the persistor's queue (after fixing their cause); the others stay, in their order",
    keys: DEAD_LETTER_SETTINGS,
    options: [reasonOption(), messageIdOption(), new Option('--limit <n>', 'requeue at most n (default: all)'), new Option('--max-in-flight <n>', 'unconfirmed copies at most (default 100)')],
    action: walk('requeue'),
    claimsSignals: () => true,
  }),
  command({
    path: ['dead-letters', 'drop'],
    summary: 'delete dead letters no fix will store (pruned-history, an unreadable compression), named by --reason, --message-id or --all; the others stay, in their order',
    keys: DEAD_LETTER_SETTINGS,
    options: [
      reasonOption(),
      messageIdOption(),
      new Option('--all', 'every dead letter'),
      new Option('--limit <n>', 'drop at most n (default: all selected)'),
      new Option('--max-in-flight <n>', 'unconfirmed copies of the letters kept, at most (default 100)'),
    ],
    action: walk('drop'),
    claimsSignals: () => true,
  }),
]
