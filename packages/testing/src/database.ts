/**
 * One PostgreSQL database per test file, cloned from a template that holds the migrated schema.
 *
 * The template is named after a hash of the migrations, created once per schema version and
 * kept between runs (cloning takes ~50 ms; migrating from scratch takes longer and would race
 * between parallel test files). It is built under a temporary name and renamed, so a clone
 * never sees a half-migrated template.
 */
import pg from 'pg'
import { TEST_DATABASE_URL } from './env.js'
import { uniqueName } from './names.js'

export interface TemplateSpec {
  /** Changes whenever the schema changes (store-postgres exports `schemaVersion()`). */
  readonly version: string
  /** Migrates the (empty) database at the given URL. */
  readonly migrate: (databaseUrl: string) => Promise<void>
}

export interface TestDatabase {
  readonly url: string
  readonly name: string
  /** Drops the database, terminating any connection still open. Idempotent. */
  readonly drop: () => Promise<void>
}

export const databaseUrl = (name: string, base = TEST_DATABASE_URL): string => {
  const u = new URL(base)
  u.pathname = `/${name}`
  return u.toString()
}

const adminQuery = async (sql: string): Promise<pg.QueryResult> => {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await client.connect()
  try {
    return await client.query(sql)
  } finally {
    await client.end()
  }
}

const exists = async (name: string): Promise<boolean> =>
  (await adminQuery(`SELECT 1 FROM pg_database WHERE datname = '${name}'`)).rowCount === 1

const ensureTemplate = async (spec: TemplateSpec): Promise<string> => {
  const name = `vp_tpl_${spec.version.slice(0, 16)}`
  if (await exists(name)) return name
  const building = uniqueName('vp_tplbuild')
  await adminQuery(`CREATE DATABASE ${building}`)
  try {
    await spec.migrate(databaseUrl(building))
    await adminQuery(`ALTER DATABASE ${building} RENAME TO ${name}`)
  } catch (e) {
    await adminQuery(`DROP DATABASE IF EXISTS ${building} WITH (FORCE)`)
    // Another test file built the same template first: use theirs.
    if (await exists(name)) return name
    throw e
  }
  return name
}

export const createTestDatabase = async (spec: TemplateSpec): Promise<TestDatabase> => {
  const template = await ensureTemplate(spec)
  const name = uniqueName('vp_test')
  for (let attempt = 0; ; attempt++) {
    try {
      await adminQuery(`CREATE DATABASE ${name} TEMPLATE ${template}`)
      break
    } catch (e) {
      // Cloning fails while another session is connected to the template (a parallel clone
      // checking it, for instance); that passes within milliseconds.
      if (attempt < 50 && /being accessed by other users/.test(String(e))) {
        await new Promise((r) => setTimeout(r, 20 + Math.random() * 80))
        continue
      }
      throw e
    }
  }
  let dropped = false
  return {
    name,
    url: databaseUrl(name),
    drop: async () => {
      if (dropped) return
      dropped = true
      await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    },
  }
}

/** An empty database (no schema), for tests of `migrate` itself. */
export const createEmptyDatabase = async (): Promise<TestDatabase> => {
  const name = uniqueName('vp_empty')
  await adminQuery(`CREATE DATABASE ${name}`)
  return { name, url: databaseUrl(name), drop: async () => void (await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)) }
}

/** A fresh migrated database and a client connected to it, both dropped at the test's teardown. */
export const testDatabaseClient = async (t: { teardown: (fn: () => Promise<void>) => void }, spec: TemplateSpec): Promise<pg.Client> => {
  const db = await createTestDatabase(spec)
  const client = new pg.Client({ connectionString: db.url })
  await client.connect()
  t.teardown(async () => {
    await client.end()
    await db.drop()
  })
  return client
}
