/**
 * Operators' questions over the alarm history (migration 0004), with Vitrage's API rules:
 * - window [start, end]: alarms active at some moment in it (inclusive overlap); start alone:
 *   not ended before start; `active`: not ended now;
 * - filters: substring match per key (Vitrage's LIKE '%v%', here case-insensitive, with % and _
 *   taken literally; `state`, Active or Inactive, matches whole), several values of a key OR-ed,
 *   keys AND-ed;
 * - project: the alarm's project_id or its resource's project id;
 * - sort by columns (vitrage_id always last, for a total order) and keyset pagination after a
 *   marker alarm;
 * - an ended alarm reports vitrage_operational_severity OK and state Inactive;
 * - end_timestamp sorts an alarm not yet ended as if it ended in 2222-02-22, as Vitrage stores it
 *   (last ascending, first descending); other NULLs sort last.
 * `now` given explicitly means "as the history stood then": alarms that started later are left
 * out, and what was recorded after it (an end, a severity change, a resource project change) is
 * neither reported nor used by the window, the filters or the project (the project as of
 * `now` is the latest change recorded by then, migration 0016). Without it the current
 * time is used only for what is active or ended, so an alarm stamped slightly ahead of this clock
 * is still listed, and counted as active (as Vitrage's `end_timestamp > now` does).
 * Unlike Vitrage, an active alarm reports its current severity (the latest change; of changes
 * stamped alike, the later event), not the one it was activated with; filters, sorting and
 * markers use what is reported (state too).
 * Query builders are pure (SQL text and parameters) and tested without a server.
 */
import { type AlarmRecord, type CausalEdge, parseTimeArgument, parseTimestamp } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import type pg from 'pg'

/**
 * Whether the schema has migration 0016's table of project changes (an SQL expression): a role
 * that may not migrate runs this version on the older schema until the owner migrates (run.ts),
 * so the projection's writers ask in each transaction, with the statement they issue first anyway,
 * and the queries as of a time ask before building theirs (without the table, an alarm whose
 * latest change came after that time reads as the activation's project, as before 0016).
 */
export const HAS_PROJECT_CHANGES = `to_regclass('history_project_change') IS NOT NULL`

type Db = pg.Pool | pg.PoolClient | pg.Client

/**
 * Runs the alarm query `build` makes for the schema (whether it has 0016's table: asked only for
 * a query as of a time) with PostgreSQL's JIT off, in a transaction of its own (`db` must not be
 * in one). The planner prices these
 * queries past jit_above_cost on a large history (the as-of project lookup is priced per row,
 * though it runs only for alarms whose latest change came later), and JIT then took longer to
 * compile than the query to run (review 65, 200,000 alarms: `--project P --now T` 327 ms against
 * 59 ms without it; `counts --now T` 541 against 287, JIT costing it before 0016 too).
 */
const runAlarmQuery = async <R extends pg.QueryResultRow>(db: Db, now: string | undefined, build: (schema: { readonly projectChanges: boolean }) => { text: string; values: unknown[] }): Promise<R[]> => {
  if ('idleCount' in db) {
    const client = await db.connect()
    try {
      return await runAlarmQuery<R>(client, now, build)
    } finally {
      client.release()
    }
  }
  // In a transaction of its own, so the setting is the query's alone: the session keeps its own
  // (a SET and a RESET went back to the role's default, not the caller's), and behind a pool of
  // server connections (PgBouncer's transaction mode) both statements reach the same one.
  await db.query('BEGIN')
  try {
    const { rows } = await db.query<{ pc: boolean }>(`SELECT set_config('jit', 'off', true), ${HAS_PROJECT_CHANGES} AS pc`)
    const { text, values } = build({ projectChanges: now === undefined || rows[0]?.pc === true })
    const result = (await db.query<R>(text, values)).rows
    await db.query('COMMIT')
    return result
  } catch (e) {
    await db.query('ROLLBACK').catch(() => {})
    throw e
  }
}

/**
 * The alarm columns an activation's payload gives (history-range.ts reads them from it): the
 * alarm columns after vitrage_id and the interval, but the resource project, which merges by
 * time of write.
 */
export const ACTIVATION_ATTRIBUTES = [
  'name',
  'vitrage_type',
  'vitrage_aggregated_severity',
  'vitrage_operational_severity',
  'project_id',
  'vitrage_resource_type',
  'vitrage_resource_id',
] as const

/** What a query can filter and sort on: the reported alarm row (`state` is derived). */
export const ALARM_COLUMNS = ['vitrage_id', 'start_timestamp', 'end_timestamp', ...ACTIVATION_ATTRIBUTES, 'vitrage_resource_project_id', 'state'] as const

export type AlarmColumn = (typeof ALARM_COLUMNS)[number]

export interface AlarmQuery {
  readonly start?: string
  readonly end?: string
  /** Only alarms active now (exclusive with start/end). */
  readonly active?: boolean
  /**
   * As of this time instead of now: what is active or ended then, and only alarms started by
   * then.
   */
  readonly now?: string
  readonly filters?: ReadonlyArray<readonly [AlarmColumn, readonly string[]]>
  readonly project?: string
  /** Columns to sort by, each ascending unless prefixed with '-'. */
  readonly sort?: readonly string[]
  readonly limit?: number
  /** vitrage_id of the last alarm of the previous page. */
  readonly marker?: string
}

const TS = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`
const ts = (col: string): string => `to_char(${col} AT TIME ZONE 'UTC', ${TS})`

/**
 * A query its arguments make impossible (an unknown marker, a malformed time, --end before
 * --start): a `rejected` Failure with code 'invalid-query', and an Error, so that a caller can
 * tell it from the database's answers with `instanceof` or by its code.
 */
export class QueryError extends Error {
  override readonly name = 'QueryError'
  readonly kind = 'rejected' as const
  readonly code = 'invalid-query'
}

/**
 * The query's times in canonical UTC (parseTimeArgument): a naive text handed to PostgreSQL as
 * it stands is read in the session's TimeZone, so a URL with `options=-c TimeZone=…` moved every
 * window; `yesterday` or `11/25/2026` were read by PostgreSQL's own rules (and its DateStyle).
 */
const normalized = (q: AlarmQuery): AlarmQuery => {
  const time = (flag: string, v: string | undefined): string | undefined => {
    if (v === undefined) return undefined
    const r = parseTimeArgument(String(v))
    if (E.isLeft(r)) throw new QueryError(`${flag}: ${r.left}`)
    return r.right
  }
  if (q.limit !== undefined && (!Number.isSafeInteger(q.limit) || q.limit < 1)) throw new QueryError(`--limit: a whole number of 1 or more, got ${String(q.limit)}`)
  const [start, end, now] = [time('--start', q.start), time('--end', q.end), time('--now', q.now)]
  return { ...q, ...(start !== undefined ? { start } : {}), ...(end !== undefined ? { end } : {}), ...(now !== undefined ? { now } : {}) }
}

/** Compares two timestamps to the microsecond (Date.parse would drop what is below a millisecond). */
const compareTimes = (aFlag: string, a: string, bFlag: string, b: string): number => {
  const [x, y] = [parseTimestamp(a), parseTimestamp(b)]
  if (E.isLeft(x)) throw new QueryError(`${aFlag}: ${x.left}`)
  if (E.isLeft(y)) throw new QueryError(`${bFlag}: ${y.left}`)
  return x.right.epochMs - y.right.epochMs || x.right.micros - y.right.micros
}

const likeLiteral = (v: string): string => `%${v.replace(/[\\%_]/g, (c) => `\\${c}`)}%`

/**
 * The alarms query. `now` is a parameter so answers are reproducible ("active" as of a time).
 * Current severity: the latest change at or after the activation, if any.
 */
export const alarmsQuery = (given: AlarmQuery, schema: { readonly projectChanges: boolean } = { projectChanges: true }): { text: string; values: unknown[] } => {
  const q = normalized(given)
  if (q.active && (q.start !== undefined || q.end !== undefined)) throw new QueryError('--active cannot be combined with --start/--end')
  if (q.end !== undefined && q.start === undefined) throw new QueryError('--end needs --start')
  if (q.start !== undefined && q.end !== undefined && compareTimes('--start', q.start, '--end', q.end) > 0) throw new QueryError(`--start ${q.start} is after --end ${q.end}`)
  const values: unknown[] = []
  const p = (v: unknown): string => {
    values.push(v)
    return `$${values.length}`
  }
  const now = p(q.now ?? new Date().toISOString())
  // What is reported, so that filters, sorting and markers agree with what is shown: an ended
  // alarm is Inactive with severity OK, an active one has its latest severity (`c`, the lateral
  // join below) and no end yet (as of `now`).
  const asOf = q.now !== undefined
  const ended = (x: string): string => `(${x}.end_timestamp IS NOT NULL AND ${x}.end_timestamp <= ${now})`
  // The resource project as of `now`: the latest change at or after the activation and not
  // after `now`, else the activation's (a change before it found no row to update in Vitrage).
  // The row holds the latest change (migration 0011; the generated column is this without the
  // time bound), so only an alarm whose latest change came after `now` looks among the earlier
  // ones (0016); jsonb keeps a change to no project (NULL) apart from "no change".
  const resourceProject = (x: string): string =>
    asOf
      ? `(CASE WHEN ${x}.resource_project_change_at IS NULL OR (${x}.start_timestamp IS NOT NULL AND ${x}.resource_project_change_at < ${x}.start_timestamp)
              THEN ${x}.activation_resource_project_id
            WHEN ${x}.resource_project_change_at <= ${now} THEN ${x}.resource_project_change
            ELSE ${schema.projectChanges ? `coalesce((SELECT jsonb_build_array(pc.project) FROM history_project_change pc
                  WHERE pc.vitrage_id = ${x}.vitrage_id AND pc.at <= ${now} AND (${x}.start_timestamp IS NULL OR pc.at >= ${x}.start_timestamp)
                  ORDER BY pc.at DESC, pc.event_id DESC LIMIT 1), jsonb_build_array(${x}.activation_resource_project_id))->>0` : `${x}.activation_resource_project_id`} END)`
      : `${x}.vitrage_resource_project_id`
  const reported = (x: string, c: string, column: string): string =>
    column === 'vitrage_operational_severity'
      ? `(CASE WHEN ${ended(x)} THEN 'OK' ELSE coalesce(${c}.severity, ${x}.vitrage_operational_severity) END)`
      : column === 'state'
        ? `(CASE WHEN ${ended(x)} THEN 'Inactive' ELSE 'Active' END)`
        : column === 'end_timestamp'
          ? `(CASE WHEN ${ended(x)} THEN ${x}.end_timestamp END)`
          : column === 'vitrage_resource_project_id'
            ? resourceProject(x)
            : `${x}.${column}`
  // Vitrage stamps to the second, so changes of one alarm often share a time: the later event
  // is the latest change (its vertex ends with it). Without --now, a change stamped ahead of this
  // clock counts, as its alarm does.
  const latestChange = (x: string): string =>
    `LEFT JOIN LATERAL (SELECT severity FROM history_change c WHERE c.vitrage_id = ${x}.vitrage_id AND c.at >= ${x}.start_timestamp${asOf ? ` AND c.at <= ${now}` : ''}
                   ORDER BY c.at DESC, c.event_id DESC LIMIT 1)`
  // The sort key: a reported end of NULL (not ended as of now) is later than every end.
  const sortKey = (x: string, c: string, column: string): string =>
    column === 'end_timestamp' ? `coalesce(${reported(x, c, column)}, 'infinity'::timestamptz)` : reported(x, c, column)
  const expr = (column: string): string => reported('a', 'c', column)
  const key = (column: string): string => sortKey('a', 'c', column)
  const where = ['a.start_timestamp IS NOT NULL']
  if (asOf) where.push(`a.start_timestamp <= ${now}`)
  if (q.active) where.push(`(a.end_timestamp IS NULL OR a.end_timestamp > ${now})`)
  // As of `now`, an end recorded after it is not known: such an alarm was open then. Both terms
  // are overlaps of the range index's expression, so PostgreSQL answers each from the index (an
  // alarm's range reaching past `now` is one that ended after it, or has not ended); written as
  // `end_timestamp > now` the second term made the query scan every alarm (review 59: 2.6 ms to
  // 50 ms on 200,000 alarms).
  const endsLater = asOf ? ` OR a.end_timestamp > ${now}` : ''
  if (q.start !== undefined && q.end !== undefined) {
    const [start, end] = [p(q.start), p(q.end)]
    const range = 'alarm_active_range(a.start_timestamp, a.end_timestamp)'
    where.push(`(${range} && tstzrange(${start}::timestamptz, ${end}::timestamptz, '[]')${asOf ? ` OR (${range} && tstzrange(${now}::timestamptz, NULL, '()') AND a.start_timestamp <= ${end}::timestamptz)` : ''})`)
  } else if (q.start !== undefined) {
    where.push(`(a.end_timestamp IS NULL OR a.end_timestamp >= ${p(q.start)}${endsLater})`)
  }
  for (const [column, vals] of q.filters ?? []) {
    if (!(ALARM_COLUMNS as readonly string[]).includes(column)) throw new QueryError(`cannot filter on ${column}; use one of ${ALARM_COLUMNS.join(', ')}`)
    const col = column === 'start_timestamp' || column === 'end_timestamp' ? ts(expr(column)) : expr(column)
    // state is Active or Inactive: a substring would match both.
    const pattern = column === 'state' ? (v: string): string => likeLiteral(v).slice(1, -1) : likeLiteral
    where.push(`(${vals.map((v) => `${col} ILIKE ${p(pattern(v))}`).join(' OR ')})`)
  }
  if (q.project !== undefined) {
    const project = p(q.project)
    where.push(`(a.project_id = ${project} OR ${resourceProject('a')} = ${project})`)
  }
  const sort = [...(q.sort ?? ['start_timestamp'])]
  if (!sort.some((s) => s.replace(/^-/, '') === 'vitrage_id')) sort.push('vitrage_id')
  const keys = sort.map((s) => {
    const column = s.replace(/^-/, '')
    if (!(ALARM_COLUMNS as readonly string[]).includes(column)) throw new QueryError(`cannot sort by ${column}; use one of ${ALARM_COLUMNS.join(', ')}`)
    return { column, desc: s.startsWith('-') }
  })
  let marker = ''
  if (q.marker !== undefined) {
    // Keyset: rows strictly after the marker row in the sort order (oslo_db's rule). Columns may
    // be NULL, so comparisons use IS NOT DISTINCT FROM for equality and NULLS LAST ordering. The
    // marker's keys are computed once (a materialized CTE read by uncorrelated subqueries).
    marker = `WITH marker AS MATERIALIZED (SELECT ${keys.map((k, i) => `${sortKey('m', 'mc', k.column)} AS k${i}`).join(', ')}
  FROM history_alarm m ${latestChange('m')} mc ON true WHERE m.vitrage_id = ${p(q.marker)})
`
    const mk = (i: number): string => `(SELECT k${i} FROM marker)`
    const terms = keys.map((k, i) => {
      const eq = keys.slice(0, i).map((e, j) => `${key(e.column)} IS NOT DISTINCT FROM ${mk(j)}`)
      const [ac, mc] = [key(k.column), mk(i)]
      const after = k.desc ? `(${ac} < ${mc} OR (${ac} IS NULL AND ${mc} IS NOT NULL))` : `(${ac} > ${mc} OR (${ac} IS NULL AND ${mc} IS NOT NULL))`
      return `(${[...eq, after].join(' AND ')})`
    })
    where.push(`(${terms.join(' OR ')})`)
  }
  const order = keys.map((k) => `${key(k.column)} ${k.desc ? 'DESC' : 'ASC'} NULLS LAST`).join(', ')
  const limit = q.limit !== undefined ? ` LIMIT ${p(q.limit)}` : ''
  const text = `${marker}SELECT a.vitrage_id, ${ts('a.start_timestamp')} AS start_timestamp,
  CASE WHEN ${ended('a')} THEN ${ts('a.end_timestamp')} END AS end_timestamp,
  a.name, a.vitrage_type, a.vitrage_aggregated_severity,
  CASE WHEN ${ended('a')} THEN 'OK' ELSE coalesce(c.severity, a.vitrage_operational_severity) END AS vitrage_operational_severity,
  a.project_id, a.vitrage_resource_type, a.vitrage_resource_id, ${resourceProject('a')} AS vitrage_resource_project_id,
  CASE WHEN ${ended('a')} THEN 'Inactive' ELSE 'Active' END AS state,
  a.payload
FROM history_alarm a
${latestChange('a')} c ON true
WHERE ${where.join('\n  AND ')}
ORDER BY ${order}${limit}`
  return { text, values }
}

export const queryAlarms = async (db: Db, q: AlarmQuery): Promise<AlarmRecord[]> => {
  // A marker that names no alarm would give an empty page, read as "no more alarms".
  if (q.marker !== undefined && (await db.query('SELECT 1 FROM history_alarm WHERE vitrage_id = $1', [q.marker])).rowCount === 0) {
    throw new QueryError(`--marker: no alarm has vitrage_id ${JSON.stringify(q.marker)}`)
  }
  return runAlarmQuery<AlarmRecord>(db, q.now, (schema) => alarmsQuery(q, schema))
}

/** Severities Vitrage counts, in its order; others are counted too, after these. */
export const SEVERITIES = ['SEVERE', 'CRITICAL', 'WARNING', 'OK', 'N/A'] as const

/** Active alarms per current operational severity, as of `now`. */
export const countActiveAlarms = async (db: Db, options: { now?: string; project?: string } = {}): Promise<Record<string, number>> => {
  const now = options.now || undefined
  const rows = await runAlarmQuery<{ severity: string | null; n: number }>(db, now, (schema) => {
    const { text, values } = alarmsQuery({ active: true, ...(now ? { now } : {}), ...(options.project ? { project: options.project } : {}) }, schema)
    return { text: `SELECT vitrage_operational_severity AS severity, count(*)::int AS n FROM (${text}) x GROUP BY 1`, values }
  })
  const out: Record<string, number> = Object.fromEntries(SEVERITIES.map((s) => [s, 0]))
  for (const r of rows) out[r.severity ?? 'N/A'] = (out[r.severity ?? 'N/A'] ?? 0) + r.n
  return out
}

/** `causes` edges from (forward) or into (backward) any of `ids`; only those active at `at` when given. */
export const causalEdges = async (
  db: pg.Pool | pg.PoolClient | pg.Client,
  ids: readonly string[],
  direction: 'forward' | 'backward',
  at?: string,
): Promise<CausalEdge[]> => {
  const column = direction === 'forward' ? 'source_id' : 'target_id'
  // Active at T as an alarm is: started at or before T, not ended at or before T.
  const activeAt = at === undefined ? '' : ` AND (e.start_timestamp IS NULL OR e.start_timestamp <= $2) AND (e.end_timestamp IS NULL OR e.end_timestamp > $2)`
  const { rows } = await db.query<CausalEdge>(
    // As of `at`, an edge active then has not ended: its end, after `at`, is not shown (as an
    // alarm's is not), or an answer about T would tell what came after it.
    `SELECT e.source_id, e.target_id, e.label, ${ts('e.start_timestamp')} AS start_timestamp, ${at === undefined ? ts('e.end_timestamp') : 'NULL::text'} AS end_timestamp, e.payload
     FROM history_edge e WHERE e.${column} = ANY($1::text[]) AND e.label = 'causes'${activeAt}
     ORDER BY e.source_id, e.target_id, e.start_timestamp NULLS FIRST`,
    at === undefined ? [ids] : [ids, at],
  )
  return rows
}

/** Alarms by vitrage_id (exact), shaped as `queryAlarms` rows; only those active at `at` when given. */
export const alarmsById = async (db: Db, ids: readonly string[], at?: string): Promise<AlarmRecord[]> => {
  // As of `at`, an alarm active then has started and is not yet ended (state Active).
  const activeAt = at === undefined ? '' : ` AND x.state = 'Active' AND x.start_timestamp::timestamptz <= $1::timestamptz`
  return runAlarmQuery<AlarmRecord>(db, at, (schema) => {
    const { text, values } = alarmsQuery(at === undefined ? {} : { now: at }, schema)
    return { text: `SELECT * FROM (${text}) x WHERE x.vitrage_id = ANY($${values.length + 1}::text[])${activeAt} ORDER BY x.vitrage_id`, values: [...values, ids] }
  })
}

/**
 * What is open in the history tables and started by `at`: alarms and causal edges (any label)
 * with no end recorded. One that ended after `at` is left alone: the history keeps an alarm's
 * latest end, so a deactivation at `at` would not shorten it, and ending its edges but not it
 * would make them disagree.
 */
export const openAt = async (db: pg.Pool | pg.PoolClient | pg.Client, at: string): Promise<{ alarms: string[]; edges: Array<{ source: string; target: string; label: string }> }> => {
  const alarms = await db.query<{ vitrage_id: string }>(`SELECT vitrage_id FROM history_alarm WHERE start_timestamp <= $1 AND end_timestamp IS NULL ORDER BY vitrage_id`, [at])
  // An interval with an unknown start (its activation never arrived) is not known to be open.
  const edges = await db.query<{ source: string; target: string; label: string }>(
    `SELECT DISTINCT source_id AS source, target_id AS target, label FROM history_edge
     WHERE start_timestamp <= $1 AND end_timestamp IS NULL ORDER BY 1, 2, 3`,
    [at],
  )
  return { alarms: alarms.rows.map((r) => r.vitrage_id), edges: edges.rows }
}
