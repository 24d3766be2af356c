/**
 * `vitrage-persistor <command>`: parses flags, resolves configuration (flags, then environment,
 * then defaults) and hands typed options to the command. Exit codes: 0 success, 1 failure,
 * 2 usage or configuration error, 70 internal defect.
 */
import { readFileSync } from 'node:fs'
import { Command, CommanderError, Option } from 'commander'
import * as E from 'fp-ts/lib/Either.js'
import { MIGRATE_SETTINGS, migrateCommand } from './commands/migrate.js'
import { RUN_SETTINGS, runCommand } from './commands/run.js'
import { type Config, resolve, type Setting, type SettingKey, settings } from './config.js'

export type Env = Readonly<Record<string, string | undefined>>

export interface Io {
  readonly out: (text: string) => void
  readonly err: (text: string) => void
}

const defaultIo: Io = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) }

const version = (): string => {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version
  } catch {
    return 'unknown'
  }
}

const showDefault = (s: Setting<unknown>): string => (s.switch ? 'off' : s.secret ? String(s.default).replace(/:[^:@/]*@/, ':***@') : JSON.stringify(s.default))

interface CommandSpec<K extends SettingKey> {
  readonly name: string
  readonly summary: string
  readonly keys: readonly K[]
  readonly action: (config: Config<K>, io: Io, env: Env) => Promise<number>
}

const command = <K extends SettingKey>(spec: CommandSpec<K>): CommandSpec<SettingKey> => spec as unknown as CommandSpec<SettingKey>

const commands: readonly CommandSpec<SettingKey>[] = [
  command({
    name: 'migrate',
    summary: 'create the database if it is missing and apply pending migrations (idempotent)',
    keys: MIGRATE_SETTINGS,
    action: migrateCommand,
  }),
  command({
    name: 'run',
    summary: 'run the persistor: consume from RabbitMQ, append to PostgreSQL, serve /metrics, /healthz, /readyz',
    keys: RUN_SETTINGS,
    action: runCommand,
  }),
]

export const main = async (argv: readonly string[], env: Env, io: Io = defaultIo): Promise<number> => {
  let exitCode = 0
  const program = new Command('vitrage-persistor')
    .description('Event persistor for OpenStack Vitrage: RabbitMQ -> PostgreSQL append-only event log')
    .version(version())
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: io.out, writeErr: io.err })
  for (const spec of commands) {
    const cmd = program.command(spec.name).description(spec.summary).exitOverride().showHelpAfterError('(run with --help for usage)')
    for (const key of spec.keys) {
      const s = settings[key] as Setting<unknown>
      const help = `${s.describe} [env ${s.env}; default ${showDefault(s)}]`
      cmd.addOption(s.switch ? new Option(`--${s.flag}`, help) : new Option(`--${s.flag} <value>`, help))
    }
    cmd.action(async (flags: Record<string, unknown>) => {
      const config = resolve(spec.keys, flags, env)
      if (E.isLeft(config)) {
        io.err(`vitrage-persistor ${spec.name}: invalid configuration\n${config.left.map((l) => `  ${l}\n`).join('')}`)
        exitCode = 2
        return
      }
      exitCode = await spec.action(config.right, io, env)
    })
  }
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
