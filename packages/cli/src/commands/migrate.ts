import { makeScrubber, redactUrl, secretsOf } from '@vitrage-persistor/core'
import { setupDatabase } from '@vitrage-persistor/store-postgres'
import * as E from 'fp-ts/lib/Either.js'
import type { Config } from '../config.js'
import type { CommandInput, Env, Io } from '../command.js'

/** The settings `migrate` takes. */
export const MIGRATE_SETTINGS = ['databaseUrl'] as const

export const migrateCommand = async (config: Config<(typeof MIGRATE_SETTINGS)[number]>, _input: CommandInput, io: Io, _env: Env): Promise<number> => {
  const scrub = makeScrubber(secretsOf([config.databaseUrl]))
  const r = await setupDatabase(config.databaseUrl, scrub)()
  if (E.isLeft(r)) {
    io.err(`vitrage-persistor migrate: ${redactUrl(config.databaseUrl)}: ${r.left.message} (${r.left.kind}${r.left.code ? `, ${r.left.code}` : ''})\n`)
    return 1
  }
  const { created, applied, current, unknown } = r.right
  io.out(
    `${redactUrl(config.databaseUrl)}: ${created ? 'database created; ' : ''}` +
      `${applied.length === 0 ? 'schema up to date' : `applied ${applied.join(', ')}`} (version ${current})\n`,
  )
  if (unknown.length > 0) io.err(newerSchema(unknown))
  return 0
}

/**
 * Said by migrate, status and run: a newer version migrated this database (this one was rolled
 * back, or runs beside it). It keeps working on what it knows; what those migrations fixed it does
 * not have (review 60: a rollback said "schema up to date" and nothing else).
 */
export const newerSchema = (unknown: readonly string[]): string =>
  `vitrage-persistor: the database has migrations this version does not know (${unknown.join(', ')}): a newer version applied them; this one runs on what it knows, without what they add\n`
