/**
 * One PostgreSQL database per test file, cloned from a template that holds the migrated schema.
 *
 * The template is named after a hash of the migrations, created once per schema version and
 * kept between runs (cloning takes ~50 ms; migrating from scratch takes longer and would race
 * between parallel test files). It is built under a temporary name and renamed, so a clone
 * never sees a half-migrated template. Its comment records when it was built: templates of other
 * schema versions built more than a day ago are dropped when a new one is built, so a checkout
 * whose migrations change does not leave one database per version behind; an older checkout
 * still being tested rebuilds its own in a second (a clone that finds its template gone
 * meanwhile builds it again).
 */
import pg from 'pg'
import { TEST_DATABASE_URL } from './env.js'
import { hostTag, uniqueName } from './names.js'

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

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}

// uniqueName's form (prefix, pid, host tag and 8 hex digits; before the tag, 8 hex digits alone),
// with a suffix for roles named after a database.
const UNIQUE = /^vp_[a-z_]+?_([0-9]+)_([0-9a-f]{4})?[0-9a-f]{8}(_[a-z]+)?$/

/** The process a name was made by, when it was made on this host (or before names had a tag). */
const pidOf = (name: string): number | undefined => {
  const m = UNIQUE.exec(name)
  if (m === null) return undefined
  return m[2] === undefined || m[2] === hostTag ? Number(m[1]) : undefined
}

/**
 * Drops what test processes killed before their teardown left behind: databases and roles
 * named by uniqueName (or after such a database: `<database>_norights`) on this host and pid
 * namespace whose process is gone, and that no session uses. Names another host or container
 * made are left to it. Once per process, before its first database.
 */
export const sweepAbandoned = async (): Promise<{ databases: string[]; roles: string[] }> => {
  const abandoned = (name: string): boolean => {
    const pid = pidOf(name)
    return pid !== undefined && !alive(pid)
  }
  const dbs = await adminQuery(`SELECT datname FROM pg_database d WHERE datname LIKE 'vp\\_%' AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)`)
  const databases = dbs.rows.map((r: { datname: string }) => r.datname).filter((name) => !name.startsWith('vp_tpl_') && abandoned(name))
  for (const name of databases) await adminQuery(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).catch(() => {})
  const rs = await adminQuery(`SELECT rolname FROM pg_roles r WHERE rolname LIKE 'vp\\_%' AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.usename = r.rolname)`)
  const roles = rs.rows.map((r: { rolname: string }) => r.rolname).filter(abandoned)
  for (const role of roles) await adminQuery(`DROP ROLE IF EXISTS "${role}"`).catch(() => {})
  return { databases, roles }
}
let swept: Promise<unknown> | undefined

const TEMPLATE_COMMENT = 'vitrage-persistor test template, built '
const TEMPLATE_RETIRED_AFTER_MS = 24 * 3600_000

/**
 * Drops the templates of other schema versions built more than a day ago (or before templates
 * carried their build time), except while a session uses one (DROP without FORCE fails then).
 */
export const retireTemplates = async (current: string, { now = Date.now(), like = 'vp\\_tpl\\_%' } = {}): Promise<string[]> => {
  const rows = await adminQuery(
    `SELECT datname, shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname LIKE '${like}' AND datname <> '${current}'`,
  )
  const retired: string[] = []
  for (const { datname, comment } of rows.rows as { datname: string; comment: string | null }[]) {
    const built = comment?.startsWith(TEMPLATE_COMMENT) === true ? Date.parse(comment.slice(TEMPLATE_COMMENT.length)) : Number.NaN
    if (!Number.isNaN(built) && now - built < TEMPLATE_RETIRED_AFTER_MS) continue
    const dropped = await adminQuery(`DROP DATABASE IF EXISTS "${datname}"`).then(() => true, () => false)
    if (dropped) retired.push(datname)
  }
  return retired
}

const ensureTemplate = async (spec: TemplateSpec): Promise<string> => {
  swept ??= sweepAbandoned().catch(() => {})
  await swept
  const name = `vp_tpl_${spec.version.slice(0, 16)}`
  if (await exists(name)) return name
  const building = uniqueName('vp_tplbuild')
  await adminQuery(`CREATE DATABASE ${building}`)
  try {
    await spec.migrate(databaseUrl(building))
    await adminQuery(`COMMENT ON DATABASE ${building} IS '${TEMPLATE_COMMENT}${new Date().toISOString()}'`)
    await adminQuery(`ALTER DATABASE ${building} RENAME TO ${name}`)
  } catch (e) {
    await adminQuery(`DROP DATABASE IF EXISTS ${building} WITH (FORCE)`)
    // Another test file built the same template first: use theirs.
    if (await exists(name)) return name
    throw e
  }
  await retireTemplates(name).catch(() => {})
  return name
}

export const createTestDatabase = async (spec: TemplateSpec): Promise<TestDatabase> => {
  let template = await ensureTemplate(spec)
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
      // A checkout of another schema version retired it between our check and the clone.
      if (attempt < 50 && /template database .* does not exist/.test(String(e))) {
        template = await ensureTemplate(spec)
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
export const openTestDatabase = async (t: { teardown: (fn: () => Promise<void>) => void }, spec: TemplateSpec): Promise<{ db: TestDatabase; client: pg.Client }> => {
  const db = await createTestDatabase(spec)
  const client = new pg.Client({ connectionString: db.url })
  // Dropping the database (WITH (FORCE)) can end the connection before the client does.
  client.on('error', () => {})
  await client.connect()
  t.teardown(async () => {
    await client.end()
    await db.drop()
  })
  return { db, client }
}

/** openTestDatabase's client alone. */
export const testDatabaseClient = async (t: { teardown: (fn: () => Promise<void>) => void }, spec: TemplateSpec): Promise<pg.Client> => (await openTestDatabase(t, spec)).client
