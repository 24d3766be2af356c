/**
 * `vitrage-persistor checkpoint list|set|remove`: the log readers' checkpoints, for the moves an
 * operator has to make by hand (a reader retired for good holds `prune` back; a mirror sent to a
 * new stream after a restore starts again from 0; one stuck on pruned events accepts the gap).
 *
 * The history projection's checkpoints are not moved here: its tables hold what it derived up to
 * its checkpoint, so moving or removing it alone would apply events twice or never; `project
 * history --rebuild` recomputes both together.
 */
import { type CommandInput, type CommandSpec, command, type Io, UsageError } from '../command.js'
import type { Config, SettingKey } from '../config.js'
import { chooseFormat, eventIdArg, formatOption, printJson, printTable } from '../output.js'
import { Option } from 'commander'
import { openStore, orReport } from '../resources.js'
import * as TE from 'fp-ts/lib/TaskEither.js'

const CHECKPOINT_SETTINGS = ['databaseUrl'] as const
type CheckpointConfig = Config<(typeof CHECKPOINT_SETTINGS)[number]>

/** The history projection's checkpoint and its partitions' (`history/<i>/<k>`). */
const isHistory = (name: string): boolean => name === 'history' || name.startsWith('history/')

const refuseHistory = (name: string): void => {
  if (isHistory(name)) {
    throw new UsageError(
      `checkpoint ${name} belongs to the history projection, whose tables go with it: \`vitrage-persistor project history --rebuild\` recomputes both; \`checkpoint remove history --drop-history\` retires the projection (its tables emptied)`,
    )
  }
}

const list = async (config: CheckpointConfig, input: CommandInput, io: Io): Promise<number> => {
  const { store } = openStore(config.databaseUrl, 'vitrage-persistor checkpoint')
  try {
    const checkpoints = await orReport(io, 'checkpoint list', config.databaseUrl, store.listCheckpoints())
    if (checkpoints === undefined) return 1
    const head = await orReport(io, 'checkpoint list', config.databaseUrl, store.headId())
    if (head === undefined) return 1
    const rows = checkpoints.map((c) => ({ name: c.name, position: c.position, behind: head - c.position, updated_at: c.updatedAt }))
    if (chooseFormat(input.options, io) === 'json') printJson(io, { head, checkpoints: rows })
    else printTable(io, ['name', 'position', 'behind', 'updated_at'], rows)
    return 0
  } finally {
    await store.close()
  }
}

const set = async (config: CheckpointConfig, input: CommandInput, io: Io): Promise<number> => {
  const name = input.args[0] as string
  refuseHistory(name)
  const position = eventIdArg('--position', input.options['position'])
  if (position === undefined) throw new UsageError('--position: required (the last event id the reader has processed; 0: from the start)')
  const { store } = openStore(config.databaseUrl, 'vitrage-persistor checkpoint')
  try {
    const head = await orReport(io, 'checkpoint set', config.databaseUrl, store.headId())
    if (head === undefined) return 1
    if (position > head) throw new UsageError(`--position ${position} is past the newest stored event (${head}): its reader would skip the events that take those ids`)
    const pruned = await orReport(io, 'checkpoint set', config.databaseUrl, store.prunedBelow())
    if (pruned === undefined) return 1
    // The log said no (as replay's pruned --from-id): exit 1, not a bad flag.
    if (position + 1 < pruned) {
      io.err(`vitrage-persistor checkpoint set: events below ${pruned} were pruned: a reader at ${position} would need events ${position + 1} to ${pruned - 1}; --position ${pruned - 1} is the lowest it can go\n`)
      return 1
    }
    // Wrapped: undefined is orReport's "failed (and said why)", not "no such checkpoint".
    const moved = await orReport(io, 'checkpoint set', config.databaseUrl, TE.map((from: number | undefined) => ({ from }))(store.setCheckpoint(name, position)))
    if (moved === undefined) return 1
    if (moved.from === undefined) {
      io.err(`vitrage-persistor checkpoint set: no checkpoint ${JSON.stringify(name)} (\`checkpoint list\` shows them)\n`)
      return 1
    }
    printJson(io, { name, from: moved.from, to: position })
    return 0
  } finally {
    await store.close()
  }
}

const remove = async (config: CheckpointConfig, input: CommandInput, io: Io): Promise<number> => {
  const name = input.args[0] as string
  const dropHistory = input.options['dropHistory'] === true
  if (dropHistory && name !== 'history') throw new UsageError('--drop-history: only with the history projection\'s checkpoint, `history`')
  if (!dropHistory) refuseHistory(name)
  const { store } = openStore(config.databaseUrl, 'vitrage-persistor checkpoint')
  try {
    if (dropHistory) {
      // Tables and checkpoints together, under the writers' lock: a projection still running
      // waits for it, then finds no checkpoint and starts again from the log's first event.
      const done = await orReport(io, 'checkpoint remove', config.databaseUrl, TE.map(() => true)(store.retireHistory('history')))
      if (done === undefined) return 1
      printJson(io, { name, removed: true, historyTablesEmptied: true })
      return 0
    }
    const removed = await orReport(io, 'checkpoint remove', config.databaseUrl, TE.map((was: number | undefined) => ({ was }))(store.removeCheckpoint(name)))
    if (removed === undefined) return 1
    if (removed.was === undefined) {
      io.err(`vitrage-persistor checkpoint remove: no checkpoint ${JSON.stringify(name)} (\`checkpoint list\` shows them)\n`)
      return 1
    }
    printJson(io, { name, removed: true, was: removed.was })
    return 0
  } finally {
    await store.close()
  }
}

const STOPPED_FIRST = 'stop its reader first (a running one conflicts, re-reads it, and a mirror registers itself again at 0)'

export const checkpointCommands: readonly CommandSpec<SettingKey>[] = [
  command({
    path: ['checkpoint', 'list'],
    summary: "the log readers' checkpoints: where each is, how far behind the head, when it last moved",
    keys: CHECKPOINT_SETTINGS,
    options: [formatOption()],
    action: list,
  }),
  command({
    path: ['checkpoint', 'set'],
    summary: `put a reader's checkpoint at an event id (not the history projection's); ${STOPPED_FIRST}`,
    keys: CHECKPOINT_SETTINGS,
    arguments: '<name>',
    options: [new Option('--position <id>', 'the last event id the reader has processed (0: from the start)')],
    action: set,
  }),
  command({
    path: ['checkpoint', 'remove'],
    summary: `remove a retired reader's checkpoint, so that prune no longer waits for it (not the history projection's); ${STOPPED_FIRST}`,
    keys: CHECKPOINT_SETTINGS,
    arguments: '<name>',
    options: [new Option('--drop-history', 'with `history`: retire the alarm-history projection (its tables emptied, its checkpoints removed); `project history` can rebuild it while the log still holds every event')],
    action: remove,
  }),
]
