/**
 * docs/cli.md: every command's `--help`, generated from the command tree itself so the reference
 * cannot drift from the program (cli-reference.test.ts fails when it does). Written by
 * `pnpm docs:cli` from the repository root.
 */
import { writeFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import type { Command } from 'commander'
import { buildProgram } from './main.js'

/** The width help is wrapped to in the reference (a terminal's is its own). */
const WIDTH = 100

const walk = (cmd: Command, path: readonly string[]): readonly { path: readonly string[]; cmd: Command }[] => [
  { path, cmd },
  ...cmd.commands.flatMap((c) => walk(c, [...path, c.name()])),
]

/** The reference as markdown (pure apart from reading the package's version, which help does not print). */
export const cliReference = (): string => {
  const program = buildProgram({}, { out: () => {}, err: () => {}, isTTY: false }, () => {}, WIDTH)
  const all = walk(program, ['vitrage-persistor'])
  const anchor = (path: readonly string[]): string => path.join('-')
  const lines = [
    '# Command-line reference',
    '',
    '<!-- Generated from the command tree by `pnpm docs:cli`; packages/cli/src/cli-reference.test.ts fails when it is out of date. -->',
    '',
    'Every command and flag, as `vitrage-persistor <command> --help` prints them. The settings shared by',
    'several commands (`--database-url`, `--amqp-url`, …) name their environment variable and default;',
    "a flag wins over its variable. README.md's tables say what each command is for; exit codes: 0",
    'success, 1 failure, 2 bad flag or configuration, 70 internal defect.',
    '',
    ...all.slice(1).map(({ path }) => `- [${path.slice(1).join(' ')}](#${anchor(path)})`),
    '',
  ]
  for (const { path, cmd } of all) {
    lines.push(`<a id="${anchor(path)}"></a>`, '', `## ${path.join(' ')}`, '', '```text', cmd.helpInformation().trimEnd(), '```', '')
  }
  return lines.join('\n')
}

const REFERENCE = new URL('../../../docs/cli.md', import.meta.url)

export const referencePath = (): URL => REFERENCE

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv.includes('--write')) {
  writeFileSync(REFERENCE, cliReference())
  process.stdout.write(`wrote ${REFERENCE.pathname}\n`)
}
