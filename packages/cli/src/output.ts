/**
 * Output for people and for programs: `--format json` (one JSON document, stable key order) or
 * `--format table` (aligned columns), table by default on a terminal and JSON otherwise.
 */
import { Option } from 'commander'
import { parseTimeArgument } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import { type Io, UsageError } from './command.js'

export type Format = 'json' | 'table'

export const formatOption = (): Option => new Option('--format <format>', 'json or table (default: table on a terminal, json otherwise)').choices(['json', 'table'])

export const chooseFormat = (options: Readonly<Record<string, unknown>>, io: Io): Format =>
  (options['format'] as Format | undefined) ?? (io.isTTY ? 'table' : 'json')

export const printJson = (io: Io, value: unknown): void => io.out(`${JSON.stringify(value, null, 2)}\n`)

const escapeControl = (c: string): string =>
  c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\t' ? '\\t' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`

/**
 * Characters a value must not print raw: C0 and C1 controls (an 8-bit CSI drives a terminal),
 * line and paragraph separators, and the bidirectional overrides and isolates (they reorder what
 * follows them on the line).
 */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/
// eslint-disable-next-line no-control-regex
const UNSAFE_ALL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g

/** One line per row: such characters in a value are escaped so a value cannot break or disguise its row. */
export const tableCell = (v: unknown): string => {
  const text = v === null || v === undefined ? '-' : typeof v === 'object' ? JSON.stringify(v) : String(v)
  return UNSAFE.test(text) ? text.replace(UNSAFE_ALL, escapeControl) : text
}

/** Aligned columns; null shows as '-'. */
export const printTable = (io: Io, columns: readonly string[], rows: ReadonlyArray<Readonly<Record<string, unknown>>>): void => {
  const cells = rows.map((r) => columns.map((c) => tableCell(r[c])))
  // A loop, not Math.max(...column): spreading one argument per row overflows the stack past
  // ~120,000 rows.
  const widths = columns.map((c) => c.length)
  for (const r of cells) for (let i = 0; i < r.length; i++) widths[i] = Math.max(widths[i] as number, (r[i] as string).length)
  const line = (values: readonly string[]): string => `${values.map((v, i) => v.padEnd(widths[i] as number)).join('  ').trimEnd()}\n`
  io.out(line(columns))
  for (const r of cells) io.out(line(r))
}

/** A timestamp argument in any form Vitrage writes (UTC when no zone is given). */
export const timestampArg = (flag: string, value: unknown): string | undefined => {
  if (value === undefined) return undefined
  const parsed = parseTimeArgument(String(value))
  if (E.isLeft(parsed)) throw new UsageError(`${flag}: ${parsed.left}`)
  return parsed.right
}

/** A whole number in plain decimal digits (not '', '0x10', '1e2' or past 2^53, which Number() takes). */
const wholeNumber = (flag: string, value: unknown, min: number): number => {
  const text = String(value).trim()
  const n = Number(text)
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`${flag}: must be ${min === 0 ? 'a whole number' : 'a positive integer'}, got ${JSON.stringify(value)}`)
  }
  return n
}

export const positiveIntArg = (flag: string, value: unknown): number | undefined => (value === undefined ? undefined : wholeNumber(flag, value, 1))

/** An event id: 0 or more. */
export const eventIdArg = (flag: string, value: unknown): number | undefined => (value === undefined ? undefined : wholeNumber(flag, value, 0))
