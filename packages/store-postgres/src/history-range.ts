/**
 * The alarm-history projection derived inside PostgreSQL: one statement per range of event ids
 * turns the range's history events into rows, from the event table's jsonb, so the payloads never
 * travel to Node and back (design §6). Measured on the 1,000,000-event bench, same hour: 33-36k
 * events/s against 22k for reading the events, deriving the commands in Node and sending their
 * rows back; 45-57k with two partitions (docs/benchmarks.md).
 *
 * The rules are those of projections' historyCommand (history/commands.ts) and of foldAlarms and
 * the merges in history.ts; a test holds the two paths to identical tables on the same events. The
 * statement takes only the events it can prove well-formed ("plain"): the identifiers it needs
 * are JSON strings, the attributes strings or null, and update_timestamp one of the two forms
 * Vitrage writes (migration 0007's history_timestamp, held to core's parseTimestamp by a test).
 * It returns the ids of the others; the caller turns those into commands in Node, which parses
 * every other timestamp form and reports what it cannot use as an anomaly, and they are applied
 * in the same transaction. Applying rows in two statements instead of one is safe because every
 * merge is commutative, ties included (history.ts). Payloads are stored as the event holds them,
 * where Node's JSON.parse would rewrite a number's text (`1.0` as `1`): equal as jsonb values.
 */
import { EventTypes, type HistoryCommand, type HistoryPartition, type HistoryRangeResult, partitionCheckpoint, type StoredEvent } from '@vitrage-persistor/core'
import type pg from 'pg'
import { moveCheckpoint } from './checkpoints.js'
import { ALARM_INSERT, ALARM_MERGE, applyCommands, EDGE_EVENT_MERGE, lockHistory } from './history.js'
import { ACTIVATION_ATTRIBUTES, HAS_PROJECT_CHANGES } from './history-queries.js'
import { readEventsById } from './read.js'

type Client = pg.PoolClient | pg.Client

const T = EventTypes
// Every string attribute historyCommand reads from an activation.
const ATTRIBUTES = [...ACTIVATION_ATTRIBUTES, 'vitrage_resource_project_id']
// Never NULL: an absent key is "not a string", so the event is handed over, not lost between
// `WHERE plain` and `WHERE NOT plain`.
const isString = (key: string): string => `coalesce(jsonb_typeof(p->'${key}'), '') = 'string'`
// Absent, JSON null or a string: what historyCommand's str() takes as is (a number or an object it
// would stringify its own way).
const isStringOrNull = (key: string): string => `coalesce(jsonb_typeof(p->'${key}'), 'null') IN ('string', 'null')`

// What a partition is chosen by: an alarm event's vitrage_id, an edge event's (source, target,
// label), so every event that writes a row goes to the partition of that row. md5, not hashtext,
// whose values PostgreSQL does not promise to keep across versions (a partition's checkpoint may
// outlive an upgrade).
const PARTITION = `('x' || left(md5(CASE WHEN e.event_type LIKE 'vitrage.alarm.%' THEN coalesce(e.payload->>'vitrage_id', '')
    ELSE concat_ws('|', e.payload->>'source_id', e.payload->>'target_id', e.payload->>'relationship_type') END), 8))::bit(32)::int & 2147483647`

/**
 * The statement for the history events with ids in ($1, $2] (pure); `partitioned`: only those
 * of partition $4 (from 0) of $3. Each level of `src` is a subquery fenced with OFFSET 0, so
 * update_timestamp is extracted and parsed once per event (flattened, PostgreSQL would copy the
 * expression into every place that uses it).
 * Returns one row: the number of history events in the range and the ids of those not plain.
 */
export const historyRangeStatement = (partitioned = false, projectChanges = true): string => `
WITH src AS MATERIALIZED (
  SELECT id, t, p, message_id, ct, at, CASE t
      WHEN '${T.alarmActivate}' THEN ${isString('vitrage_id')} AND at IS NOT NULL AND ${ATTRIBUTES.map(isStringOrNull).join(' AND ')}
      WHEN '${T.alarmDeactivate}' THEN ${isString('vitrage_id')} AND at IS NOT NULL
      WHEN '${T.alarmChange}' THEN ${isString('vitrage_id')} AND at IS NOT NULL AND ${isString('vitrage_operational_severity')}
      WHEN '${T.alarmChangeProjectId}' THEN ${isString('vitrage_id')} AND ${isStringOrNull('vitrage_resource_project_id')}
        AND (at IS NOT NULL OR NOT ${isString('update_timestamp')})
      ELSE ${isString('source_id')} AND ${isString('target_id')} AND ${isString('relationship_type')} AND at IS NOT NULL
    END AS plain
  FROM (
    SELECT id, t, p, message_id, ct, history_timestamp(ts) AS at FROM (
      SELECT e.id, e.event_type AS t, e.payload AS p, e.message_id, e.collector_timestamp AS ct, e.payload->>'update_timestamp' AS ts
      FROM event e
      WHERE e.id > $1 AND e.id <= $2
        AND e.event_type IN ('${T.alarmActivate}', '${T.alarmDeactivate}', '${T.alarmChange}', '${T.alarmChangeProjectId}', '${T.causalActivate}', '${T.causalDeactivate}')
        ${partitioned ? `AND (${PARTITION}) % $3 = $4` : ''}
      OFFSET 0) raw
    OFFSET 0) parsed
),
-- Alarm events; a project change without update_timestamp is ordered by its collector time.
a AS (
  SELECT id, t, p, p->>'vitrage_id' AS vid, CASE WHEN t = '${T.alarmChangeProjectId}' THEN coalesce(at, ct) ELSE at END AS at
  FROM src WHERE plain AND t IN ('${T.alarmActivate}', '${T.alarmDeactivate}', '${T.alarmChangeProjectId}')
),
-- foldAlarms: the earliest activation (the first event on equal times), the latest deactivation,
-- and the latest project change (the later event on equal times).
activation AS (SELECT DISTINCT ON (vid) vid, id, at, p FROM a WHERE t = '${T.alarmActivate}' ORDER BY vid, at, id),
deactivation AS (SELECT vid, max(at) AS end_at FROM a WHERE t = '${T.alarmDeactivate}' GROUP BY vid),
change AS (
  SELECT DISTINCT ON (vid) vid, p->>'vitrage_resource_project_id' AS project_id, at, id
  FROM a WHERE t = '${T.alarmChangeProjectId}' ORDER BY vid, at DESC, id DESC
),
alarms AS (
  ${ALARM_INSERT}
  SELECT ids.vid, activation.at, deactivation.end_at,
    ${ACTIVATION_ATTRIBUTES.map((k) => `activation.p->>'${k}'`).join(', ')},
    activation.p->>'vitrage_resource_project_id', change.project_id, change.at, change.id, activation.p, activation.id
  FROM (SELECT DISTINCT vid FROM a) ids
    LEFT JOIN activation USING (vid) LEFT JOIN deactivation USING (vid) LEFT JOIN change USING (vid)
  ${ALARM_MERGE}
),
${projectChanges ? `project_changes AS (
  INSERT INTO history_project_change (event_id, vitrage_id, at, project)
  SELECT id, vid, at, p->>'vitrage_resource_project_id' FROM a WHERE t = '${T.alarmChangeProjectId}'
  ON CONFLICT (event_id) DO NOTHING
),` : ''}
changes AS (
  INSERT INTO history_change (message_id, vitrage_id, at, severity, payload, event_id)
  SELECT message_id, p->>'vitrage_id', at, p->>'vitrage_operational_severity', p, id
  FROM src WHERE plain AND t = '${T.alarmChange}' ORDER BY id
  ON CONFLICT (message_id) DO NOTHING
),
edges AS (
  INSERT INTO history_edge_event (source_id, target_id, label, kind, at, event_id, payload)
  SELECT DISTINCT ON (1, 2, 3, 4, 5) p->>'source_id', p->>'target_id', p->>'relationship_type',
    CASE WHEN t = '${T.causalActivate}' THEN 'a' ELSE 'd' END, at, id, CASE WHEN t = '${T.causalActivate}' THEN p END
  FROM src WHERE plain AND t IN ('${T.causalActivate}', '${T.causalDeactivate}') ORDER BY 1, 2, 3, 4, 5, id
  ${EDGE_EVENT_MERGE}
)
SELECT count(*)::int AS events, coalesce(array_agg(id ORDER BY id) FILTER (WHERE NOT plain), '{}') AS others FROM src`

// By partitioning, then by whether the schema has history_project_change (0016).
const RANGE_SQL = { true: historyRangeStatement(false, true), false: historyRangeStatement(false, false) }
const PARTITION_RANGE_SQL = { true: historyRangeStatement(true, true), false: historyRangeStatement(true, false) }

/**
 * Applies the history events with ids in (`expected`, `position`] and moves checkpoint `name`
 * from `expected` to `position`, in one transaction on `client`: the plain events by one
 * statement, the others through `commandsFor` (synchronous: it runs inside the transaction).
 * With `partition`, only that partition's events, and the checkpoint moved is the partition's.
 */
export const applyHistoryRange = async (
  client: Client,
  name: string,
  expected: number,
  position: number,
  commandsFor: (events: readonly StoredEvent[]) => readonly HistoryCommand[],
  partition?: HistoryPartition,
): Promise<HistoryRangeResult> => {
  await client.query('BEGIN')
  try {
    // The planner cannot estimate the partition predicate (it guesses 0.5% of the range) and then
    // joins the folded alarm rows by nested loops over CTE scans, quadratic in the range: 14-16k
    // against 51-56k events/s measured with two partitions. Hash joins are right at any size here.
    const settings = await client.query<{ pc: boolean }>(
      `SELECT set_config('enable_nestloop', 'off', true), ${lockHistory(partition === undefined ? 'exclusive' : 'shared')}, ${HAS_PROJECT_CHANGES} AS pc`,
      [name],
    )
    const projectChanges = settings.rows[0]?.pc === true
    await moveCheckpoint(client, partition === undefined ? name : partitionCheckpoint(name, partition), expected, position)
    const { rows } =
      partition === undefined
        ? await client.query<{ events: number; others: string[] }>(RANGE_SQL[`${projectChanges}`], [expected, position])
        : await client.query<{ events: number; others: string[] }>(PARTITION_RANGE_SQL[`${projectChanges}`], [expected, position, partition.of, partition.index])
    const events = rows[0]?.events ?? 0
    const others = rows[0]?.others ?? []
    if (others.length > 0) await applyCommands(client, commandsFor(await readEventsById(client, others.map(Number))), projectChanges)
    await client.query('COMMIT')
    return { events, handedOver: others.length }
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {})
    throw e
  }
}
