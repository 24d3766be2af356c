/** The shape of a command: what main parses for it and what it receives. */
import type { Option } from 'commander'
import type { Config, SettingKey } from './config.js'

export type Env = Readonly<Record<string, string | undefined>>

export interface Io {
  readonly out: (text: string) => void
  readonly err: (text: string) => void
  /** Standard output is a terminal (tables are for people). */
  readonly isTTY: boolean
  /** Standard error is a terminal (progress bars are for people; otherwise plain lines). */
  readonly errIsTTY?: boolean
  /** The output's reader went away (`| head`): a command that would go on printing ends. */
  readonly outputClosed?: () => boolean
}


/** What a command receives besides its configuration: its positional arguments and its own options. */
export interface CommandInput {
  readonly args: readonly string[]
  readonly options: Readonly<Record<string, unknown>>
}

/** A usage problem in a command's own arguments: printed, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError'
}

export interface CommandSpec<K extends SettingKey> {
  /** `['history', 'alarms']` for `vitrage-persistor history alarms`. */
  readonly path: readonly string[]
  readonly summary: string
  readonly keys: readonly K[]
  /** Positional arguments in commander syntax, e.g. '<alarm-id>'. */
  readonly arguments?: string
  /**
   * Where a command reads a setting's absence its own way, the default its help shows
   * (`project history` listens on no port unless given one, where others take 9464).
   */
  readonly defaultsShown?: Partial<Readonly<Record<K, string>>>
  /** The command's own options (not settings: no environment variable). */
  readonly options?: readonly Option[]
  readonly action: (config: Config<K>, input: CommandInput, io: Io, env: Env) => Promise<number>
  /**
   * Whether the command, given these arguments, handles SIGTERM/SIGINT itself (it runs until
   * stopped). Others keep the default: exit at once.
   */
  readonly claimsSignals?: (input: CommandInput) => boolean
}

export const command = <K extends SettingKey>(spec: CommandSpec<K>): CommandSpec<SettingKey> => spec as unknown as CommandSpec<SettingKey>

