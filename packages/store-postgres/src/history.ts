/**
 * Applying alarm-history commands (core/history.ts) to the tables of migration 0004, set-based:
 * one statement per kind of command for a whole page of events, so the projection keeps up with
 * tens of thousands of events per second. Each statement is idempotent and commutative:
 * - alarms: start is the earliest activation, end the latest deactivation, attributes come from
 *   the earliest activation, vitrage_resource_project_id from the latest write in time;
 * - changes: one row per message_id;
 * - edges: every activation/deactivation is kept (deduplicated), and the intervals of each edge
 *   touched are recomputed from all of its events (core's edgeIntervals).
 * The checkpoint moves in the same transaction, compare-and-set, so two runners cannot both
 * apply a page.
 */
import { type EdgeEventPoint, edgeIntervals, type HistoryCommand } from '@vitrage-persistor/core'
import type pg from 'pg'
import { moveCheckpoint } from './checkpoints.js'

type Client = pg.PoolClient | pg.Client

type Of<K extends HistoryCommand['kind']> = Extract<HistoryCommand, { kind: K }>

const byKind = <K extends HistoryCommand['kind']>(commands: readonly HistoryCommand[], kind: K): Array<Of<K>> =>
  commands.filter((c): c is Of<K> => c.kind === kind)

/** Within one statement a row may be written once: keep, per key, the command `better` prefers. */
const onePerKey = <T>(items: readonly T[], key: (t: T) => string, better: (a: T, b: T) => boolean): T[] => {
  const chosen = new Map<string, T>()
  for (const item of items) {
    const k = key(item)
    const current = chosen.get(k)
    if (current === undefined || better(item, current)) chosen.set(k, item)
  }
  return [...chosen.values()]
}

const ACTIVATE_SQL = `
INSERT INTO history_alarm AS h (vitrage_id, start_timestamp, name, vitrage_type, vitrage_aggregated_severity,
  vitrage_operational_severity, project_id, vitrage_resource_type, vitrage_resource_id,
  vitrage_resource_project_id, resource_project_at, payload, activation_event_id)
SELECT a.vitrage_id, a.at, a.name, a.vitrage_type, a.agg, a.op, a.project_id, a.resource_type, a.resource_id,
  a.resource_project_id, a.at, a.payload, a.event_id
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
  $9::text[], $10::text[], $11::jsonb[], $12::bigint[])
  AS a(vitrage_id, at, name, vitrage_type, agg, op, project_id, resource_type, resource_id, resource_project_id, payload, event_id)
ON CONFLICT (vitrage_id) DO UPDATE SET
  start_timestamp = least(h.start_timestamp, EXCLUDED.start_timestamp),
  name = CASE WHEN h.start_timestamp IS NULL OR EXCLUDED.start_timestamp < h.start_timestamp THEN EXCLUDED.name ELSE h.name END,
  vitrage_type = CASE WHEN h.start_timestamp IS NULL OR EXCLUDED.start_timestamp < h.start_timestamp THEN EXCLUDED.vitrage_type ELSE h.vitrage_type END,
  vitrage_aggregated_severity = CASE WHEN h.start_timestamp IS NULL OR EXCLUDED.start_timestamp < h.start_timestamp THEN EXCLUDED.vitrage_aggregated_severity ELSE h.vitrage_aggregated_severity END,
  vitrage_operational_severity = CASE WHEN h.start_timestamp IS NULL OR EXCLUDED.start_timestamp < h.start_timestamp THEN EXCLUDED.vitrage_operational_severity ELSE h.vitrage_operational_severity END,
  project_id = CASE WHEN h.start_timestamp IS NULL OR EXCLUDED.start_timestamp < h.start_timestamp THEN EXCLUDED.project_id ELSE h.project_id END,
  vitrage_resource_type = CASE WHEN h.start_timestamp IS NULL OR EXCLUDED.start_timestamp < h.start_timestamp THEN EXCLUDED.vitrage_resource_type ELSE h.vitrage_resource_type END,
  vitrage_resource_id = CASE WHEN h.start_timestamp IS NULL OR EXCLUDED.start_timestamp < h.start_timestamp THEN EXCLUDED.vitrage_resource_id ELSE h.vitrage_resource_id END,
  payload = CASE WHEN h.start_timestamp IS NULL OR EXCLUDED.start_timestamp < h.start_timestamp THEN EXCLUDED.payload ELSE h.payload END,
  activation_event_id = CASE WHEN h.start_timestamp IS NULL OR EXCLUDED.start_timestamp < h.start_timestamp THEN EXCLUDED.activation_event_id ELSE h.activation_event_id END,
  vitrage_resource_project_id = CASE WHEN h.resource_project_at IS NULL OR EXCLUDED.resource_project_at > h.resource_project_at THEN EXCLUDED.vitrage_resource_project_id ELSE h.vitrage_resource_project_id END,
  resource_project_at = greatest(h.resource_project_at, EXCLUDED.resource_project_at)`

const DEACTIVATE_SQL = `
INSERT INTO history_alarm AS h (vitrage_id, end_timestamp)
SELECT * FROM unnest($1::text[], $2::timestamptz[])
ON CONFLICT (vitrage_id) DO UPDATE SET end_timestamp = greatest(h.end_timestamp, EXCLUDED.end_timestamp)`

const PROJECT_SQL = `
INSERT INTO history_alarm AS h (vitrage_id, vitrage_resource_project_id, resource_project_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
ON CONFLICT (vitrage_id) DO UPDATE SET
  vitrage_resource_project_id = CASE WHEN h.resource_project_at IS NULL OR EXCLUDED.resource_project_at > h.resource_project_at
    THEN EXCLUDED.vitrage_resource_project_id ELSE h.vitrage_resource_project_id END,
  resource_project_at = greatest(h.resource_project_at, EXCLUDED.resource_project_at)`

const CHANGE_SQL = `
INSERT INTO history_change (message_id, vitrage_id, at, severity, payload, event_id)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[], $6::bigint[])
ON CONFLICT (message_id) DO NOTHING`

const EDGE_EVENT_SQL = `
INSERT INTO history_edge_event (source_id, target_id, label, kind, at, event_id, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::char[], $5::timestamptz[], $6::bigint[], $7::jsonb[])
ON CONFLICT DO NOTHING`

const TS = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`

const EDGE_POINTS_SQL = `
SELECT e.source_id, e.target_id, e.label, e.kind, to_char(e.at AT TIME ZONE 'UTC', ${TS}) AS at, e.payload
FROM history_edge_event e
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(source_id, target_id, label)
  ON e.source_id = k.source_id AND e.target_id = k.target_id AND e.label = k.label`

const EDGE_DELETE_SQL = `
DELETE FROM history_edge e USING unnest($1::text[], $2::text[], $3::text[]) AS k(source_id, target_id, label)
WHERE e.source_id = k.source_id AND e.target_id = k.target_id AND e.label = k.label`

const EDGE_INSERT_SQL = `
INSERT INTO history_edge (source_id, target_id, label, start_timestamp, end_timestamp, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::jsonb[])`

const json = (v: unknown): string | null => (v === undefined || v === null ? null : JSON.stringify(v))

const edgeKey = (c: { source: string; target: string; label: string }): string => JSON.stringify([c.source, c.target, c.label])

/**
 * Applies `commands` and moves checkpoint `name` from `expected` to `position`, in one
 * transaction on `client`.
 */
export const applyHistory = async (client: Client, name: string, commands: readonly HistoryCommand[], expected: number, position: number): Promise<void> => {
  await client.query('BEGIN')
  try {
    await moveCheckpoint(client, name, expected, position)

    const acts = onePerKey(byKind(commands, 'activate-alarm'), (c) => c.vitrageId, (a, b) => a.at < b.at)
    if (acts.length > 0) {
      await client.query(ACTIVATE_SQL, [
        acts.map((c) => c.vitrageId),
        acts.map((c) => c.at),
        acts.map((c) => c.attributes.name),
        acts.map((c) => c.attributes.vitrageType),
        acts.map((c) => c.attributes.aggregatedSeverity),
        acts.map((c) => c.attributes.operationalSeverity),
        acts.map((c) => c.attributes.projectId),
        acts.map((c) => c.attributes.resourceType),
        acts.map((c) => c.attributes.resourceId),
        acts.map((c) => c.attributes.resourceProjectId),
        acts.map((c) => json(c.payload)),
        acts.map((c) => c.eventId),
      ])
    }
    const deacts = onePerKey(byKind(commands, 'deactivate-alarm'), (c) => c.vitrageId, (a, b) => a.at > b.at)
    if (deacts.length > 0) await client.query(DEACTIVATE_SQL, [deacts.map((c) => c.vitrageId), deacts.map((c) => c.at)])
    const projects = onePerKey(byKind(commands, 'change-project'), (c) => c.vitrageId, (a, b) => a.at > b.at)
    if (projects.length > 0) {
      await client.query(PROJECT_SQL, [projects.map((c) => c.vitrageId), projects.map((c) => c.resourceProjectId), projects.map((c) => c.at)])
    }
    const changes = onePerKey(byKind(commands, 'change-severity'), (c) => c.messageId, () => false)
    if (changes.length > 0) {
      await client.query(CHANGE_SQL, [
        changes.map((c) => c.messageId),
        changes.map((c) => c.vitrageId),
        changes.map((c) => c.at),
        changes.map((c) => c.severity),
        changes.map((c) => json(c.payload)),
        changes.map((c) => c.eventId),
      ])
    }
    await applyEdges(client, commands)
    await client.query('COMMIT')
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {})
    throw e
  }
}

const applyEdges = async (client: Client, commands: readonly HistoryCommand[]): Promise<void> => {
  const points = commands.filter((c): c is Of<'activate-edge'> | Of<'deactivate-edge'> => c.kind === 'activate-edge' || c.kind === 'deactivate-edge')
  if (points.length === 0) return
  await client.query(EDGE_EVENT_SQL, [
    points.map((c) => c.source),
    points.map((c) => c.target),
    points.map((c) => c.label),
    points.map((c) => (c.kind === 'activate-edge' ? 'a' : 'd')),
    points.map((c) => c.at),
    points.map((c) => c.eventId),
    points.map((c) => (c.kind === 'activate-edge' ? json(c.payload) : null)),
  ])
  const keys = onePerKey(points, edgeKey, () => false)
  const keyArrays = [keys.map((k) => k.source), keys.map((k) => k.target), keys.map((k) => k.label)]
  const { rows } = await client.query<{ source_id: string; target_id: string; label: string; kind: 'a' | 'd'; at: string; payload: unknown }>(EDGE_POINTS_SQL, keyArrays)
  const perEdge = new Map<string, EdgeEventPoint[]>()
  for (const r of rows) {
    const k = edgeKey({ source: r.source_id, target: r.target_id, label: r.label })
    const list = perEdge.get(k) ?? []
    list.push({ kind: r.kind, at: r.at, payload: r.payload })
    perEdge.set(k, list)
  }
  const out: Array<{ source: string; target: string; label: string; start: string | null; end: string | null; payload: unknown }> = []
  for (const k of keys) {
    for (const i of edgeIntervals(perEdge.get(edgeKey(k)) ?? [])) out.push({ source: k.source, target: k.target, label: k.label, ...i })
  }
  await client.query(EDGE_DELETE_SQL, keyArrays)
  await client.query(EDGE_INSERT_SQL, [
    out.map((i) => i.source),
    out.map((i) => i.target),
    out.map((i) => i.label),
    out.map((i) => i.start),
    out.map((i) => i.end),
    out.map((i) => json(i.payload)),
  ])
}

/** Empties the history tables and resets the checkpoint (a rebuild from the log follows). */
export const resetHistory = async (client: Client, name: string): Promise<void> => {
  await client.query('BEGIN')
  try {
    await client.query('TRUNCATE history_alarm, history_change, history_edge, history_edge_event')
    await client.query(`INSERT INTO projection_checkpoint (name, position) VALUES ($1, 0)
      ON CONFLICT (name) DO UPDATE SET position = 0, updated_at = now()`, [name])
    await client.query('COMMIT')
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {})
    throw e
  }
}
