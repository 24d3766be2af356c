/**
 * `vitrage-persistor <command>`: parses flags, resolves configuration (flags, then environment,
 * then defaults) and hands typed options to the command. Exit codes: 0 success, 1 failure,
 * 2 usage or configuration error, 70 internal defect.
 */
import { readFileSync } from 'node:fs'
import { Command, CommanderError, Option } from 'commander'
import { makeScrubber, secretsOfArguments } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import { MIGRATE_SETTINGS, migrateCommand } from './commands/migrate.js'
import { checkpointCommands } from './commands/checkpoint.js'
import { deadLetterCommands } from './commands/dead-letters.js'
import { eventsCommands } from './commands/events.js'
import { graphCommands } from './commands/graph.js'
import { historyCommands } from './commands/history.js'
import { mirrorCommands } from './commands/mirror.js'
import { RUN_SETTINGS, runCommand } from './commands/run.js'
import { statusCommands } from './commands/status.js'
import { type CommandSpec, command, type Env, type Io, UsageError } from './command.js'
import { resolve, type Setting, type SettingKey, settings } from './config.js'
import { releaseHeldSignals } from './signals.js'

export type { CommandInput, Env, Io } from './command.js'

/**
 * A command's output going to a reader that went away (`events | head`): nothing more can be
 * delivered, so what follows is dropped (not an unhandled EPIPE), the command ends with its own
 * exit code, and one that would print for ever (`events --follow`) ends when it sees
 * `outputClosed`. Installed on the first output only: `run` prints none (its logs handle a
 * closed stdout themselves and it keeps running, logger.ts).
 */
const guarded = (stream: NodeJS.WriteStream): { readonly write: (t: string) => void; readonly gone: () => boolean } => {
  let installed = false
  let gone = false
  return {
    write: (t) => {
      if (!installed) {
        installed = true
        stream.on('error', (e: NodeJS.ErrnoException) => {
          if (e.code !== 'EPIPE' && e.code !== 'ERR_STREAM_DESTROYED') throw e
          gone = true
        })
      }
      if (!gone) stream.write(t)
    },
    gone: () => gone,
  }
}
const stdout = guarded(process.stdout)
// The same for stderr (`events 2>&1 | head`: the notice after the last row went to a closed
// pipe and ended the command as a defect, exit 70).
const stderr = guarded(process.stderr)

const defaultIo: Io = {
  out: stdout.write,
  outputClosed: stdout.gone,
  err: stderr.write,
  isTTY: process.stdout.isTTY === true,
  errIsTTY: process.stderr.isTTY === true,
}

const version = (): string => {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version
  } catch {
    return 'unknown'
  }
}

/** What the commands that only group others (`history alarms`, `snapshot list`...) are for, in the top-level help. */
const GROUPS: Readonly<Record<string, string>> = {
  history: 'alarm history questions (alarms, rca, counts) and recording a vitrage-graph cold start (end-open)',
  project: 'run a projection alone (project history)',
  snapshot: 'graph snapshots: create, list',
  checkpoint: "the log readers' checkpoints, which prune waits for: list, set, remove",
  'dead-letters': 'what is in the dead-letter queue and why (list), and sending letters back (requeue)',
}

const showDefault = (s: Setting<unknown>): string =>
  s.switch ? (s.default === true ? 'on' : 'off') : s.secret ? String(s.default).replace(/:[^:@/]*@/, ':***@') : JSON.stringify(s.default)

const commands: readonly CommandSpec<SettingKey>[] = [
  command({
    path: ['migrate'],
    summary: 'create the database if it is missing and apply pending migrations (idempotent)',
    keys: MIGRATE_SETTINGS,
    action: migrateCommand,
  }),
  command({
    path: ['run'],
    summary: 'run the persistor: consume from RabbitMQ, append to PostgreSQL, serve /metrics, /healthz, /readyz',
    keys: RUN_SETTINGS,
    action: runCommand,
    claimsSignals: () => true,
  }),
  ...historyCommands,
  ...graphCommands,
  ...eventsCommands,
  ...checkpointCommands,
  ...mirrorCommands,
  ...deadLetterCommands,
  ...statusCommands,
]

/**
 * The command tree. `setExitCode` receives each action's exit code; `helpWidth` fixes the width
 * help is wrapped to (the reference in docs/cli.md), which is otherwise the terminal's.
 */
export const buildProgram = (env: Env, io: Io, setExitCode: (code: number) => void, helpWidth?: number): Command => {
  const program = new Command('vitrage-persistor')
    .description('Event persistor for OpenStack Vitrage: RabbitMQ -> PostgreSQL append-only event log')
    .version(version())
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({
      writeOut: io.out,
      writeErr: io.err,
      ...(helpWidth !== undefined ? { getOutHelpWidth: () => helpWidth, getErrHelpWidth: () => helpWidth, getOutHasColors: () => false } : {}),
    })
  const groups = new Map<string, Command>()
  for (const spec of commands) {
    // Parents of nested commands (`history`, `snapshot`...) are created once.
    let parent = program
    for (const [i, word] of spec.path.slice(0, -1).entries()) {
      const key = spec.path.slice(0, i + 1).join(' ')
      let group = groups.get(key)
      if (group === undefined) {
        group = parent
          .command(word)
          .description(GROUPS[key] ?? '')
          .exitOverride()
          .showHelpAfterError('(run with --help for usage)')
        groups.set(key, group)
      }
      parent = group
    }
    const name = spec.path.join(' ')
    const cmd = parent
      .command(`${spec.path.at(-1) as string}${spec.arguments ? ` ${spec.arguments}` : ''}`)
      .description(spec.summary)
      .exitOverride()
      .showHelpAfterError('(run with --help for usage)')
    for (const key of spec.keys) {
      const s = settings[key] as Setting<unknown>
      const help = `${s.describe} [env ${s.env}; default ${spec.defaultsShown?.[key] ?? showDefault(s)}]`
      if (s.switch) {
        // Both forms, so a flag can undo what the environment set (the flag wins): the one that
        // changes the default carries the description.
        const [main, other] = s.default === true ? [`--no-${s.flag}`, `--${s.flag}`] : [`--${s.flag}`, `--no-${s.flag}`]
        cmd.addOption(new Option(main, s.default === true ? `${s.describeOff ?? `not: ${s.describe}`} [env ${s.env}=false; default on]` : help))
        cmd.addOption(new Option(other, `the default, whatever ${s.env} says`))
      } else cmd.addOption(new Option(`--${s.flag} <value>`, help))
    }
    for (const option of spec.options ?? []) cmd.addOption(option)
    cmd.action(async (...received: unknown[]) => {
      const self = received.at(-1) as Command
      const all = self.opts<Record<string, unknown>>()
      // Only what was given on the command line competes with the environment; commander's own
      // defaults (of negatable switches, say) must not.
      const given = Object.fromEntries(Object.entries(all).filter(([k]) => self.getOptionValueSource(k) === 'cli'))
      const config = resolve(spec.keys, given, env)
      if (E.isLeft(config)) {
        io.err(`vitrage-persistor ${name}: invalid configuration\n${config.left.map((l) => `  ${l}\n`).join('')}`)
        setExitCode(2)
        return
      }
      const input = { args: self.args, options: all }
      if (spec.claimsSignals?.(input) !== true) releaseHeldSignals()
      try {
        setExitCode(await spec.action(config.right, input, io, env))
      } catch (e) {
        if (!(e instanceof UsageError)) throw e
        io.err(`vitrage-persistor ${name}: ${e.message}\n`)
        setExitCode(2)
      }
    })
  }
  return program
}

export const main = async (argv: readonly string[], env: Env, given: Io = defaultIo): Promise<number> => {
  let exitCode = 0
  // What goes to stderr before a configuration is parsed is scrubbed too: a usage error quotes
  // the argument it refuses (`unknown option '--database_url=postgres://u:pw@…'`, review 62).
  const scrub = makeScrubber(secretsOfArguments([...Object.values(env), ...argv]))
  const io: Io = { ...given, err: (text) => given.err(scrub(text)) }
  const program = buildProgram(env, io, (code) => {
    exitCode = code
  })
  try {
    await program.parseAsync(argv as string[])
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version are not errors; anything else commander rejects is a usage error.
      return e.exitCode === 0 ? 0 : 2
    }
    throw e
  }
  return exitCode
}
