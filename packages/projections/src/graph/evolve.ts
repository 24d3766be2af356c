/**
 * Replay of `vitrage.graph.change` events, exactly as Vitrage's
 * `GraphPersistency.do_replay_events` applies `events` rows to an `NXGraph` (design §5;
 * Vitrage 9.0.0 entity_graph/graph_persistency.py:54-74):
 *
 * - payload `{"is_vertex": bool, "payload": after-image}`;
 * - vertex: key `vertex_id`, removed from the properties; edge: key (`source_id`, `target_id`,
 *   `label`), the three removed (`relationship_type` stays, it is an ordinary property);
 * - the after-image is applied with update semantics (see EntityGraph.updateVertex): an absent
 *   element, or one whose property map is empty, gets all the properties with nulls kept;
 *   otherwise every key is overwritten and keys whose new value is null are deleted;
 * - an edge with an unknown endpoint creates that vertex with no properties;
 * - nothing is ever removed.
 *
 * Malformed changes. Vitrage raises on them (KeyError, TypeError, or AttributeError from
 * `Vertex`/`Edge` when an id is empty) and, because `do_replay_events` has no handler, the whole
 * replay stops there. Here such an event is skipped: the graph is left as it was and the event
 * is recorded as an anomaly (`EntityGraph.anomalyCount` / `recentAnomalies`). Malformed means:
 * the payload has no boolean `is_vertex` or no object `payload`; a vertex after-image without a
 * non-empty string `vertex_id`; an edge after-image without non-empty strings `source_id`,
 * `target_id` and `label`. (Vitrage ids are strings; a number would make a different networkx
 * node from its text, which the canonical form could not tell apart, so it is rejected too.)
 */
import { EventTypes, type LogEntry } from '@vitrage-persistor/core'
import { isNonEmptyString, isPlainObject } from './json.js'
import { EntityGraph, type GraphAnomaly, type GraphAnomalyReason, type GraphWriter } from './model.js'

const anomaly = (event: LogEntry, reason: GraphAnomalyReason, detail: string): GraphAnomaly => ({
  eventId: event.id,
  messageId: event.messageId,
  reason,
  detail,
})

const describe = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'string' && v === '' ? 'empty string' : typeof v)

/**
 * Applies one stored event to any GraphWriter. Returns the anomaly when a graph change is
 * malformed (nothing applied), otherwise undefined (also for other event types, which are
 * ignored).
 */
export const applyEvent = (graph: GraphWriter, event: LogEntry): GraphAnomaly | undefined => {
  if (event.eventType !== EventTypes.graphChange) return undefined
  const payload: unknown = event.payload
  if (!isPlainObject(payload)) return anomaly(event, 'invalid-payload', `payload must be an object, got ${describe(payload)}`)
  const isVertex = payload['is_vertex']
  if (typeof isVertex !== 'boolean') return anomaly(event, 'invalid-is-vertex', `"is_vertex" must be a boolean, got ${describe(isVertex)}`)
  const after = payload['payload']
  if (!isPlainObject(after)) return anomaly(event, 'invalid-after-image', `"payload" must be an object, got ${describe(after)}`)
  if (isVertex) {
    const id = after['vertex_id']
    if (!isNonEmptyString(id)) return anomaly(event, 'invalid-vertex-id', `"vertex_id" must be a non-empty string, got ${describe(id)}`)
    graph.updateVertex(id, after, true)
  } else {
    const source = after['source_id']
    const target = after['target_id']
    const label = after['label']
    const bad = !isNonEmptyString(source) ? 'source_id' : !isNonEmptyString(target) ? 'target_id' : !isNonEmptyString(label) ? 'label' : undefined
    if (bad !== undefined) return anomaly(event, 'invalid-edge-key', `"${bad}" must be a non-empty string, got ${describe(after[bad])}`)
    graph.updateEdge(source as string, target as string, label as string, after, true)
  }
  return undefined
}

/**
 * The graph after `event`. Pure in the sense that matters for replay (no I/O, the result
 * depends only on the two arguments, the event is not modified) but, for speed, it MUTATES
 * `graph` IN PLACE and returns that same object. Events of other types leave it unchanged; a
 * malformed graph change is skipped and counted (see the module comment). Property values that
 * are lists or objects are shared with the event, not copied: treat events as immutable.
 */
export const evolve = (graph: EntityGraph, event: LogEntry): EntityGraph => {
  const a = applyEvent(graph, event)
  if (a !== undefined) graph.recordAnomaly(a)
  return graph
}

/** Replays `events` in order into `graph` (a new empty graph when absent); returns the graph. */
export const replayGraph = (events: Iterable<LogEntry>, graph?: EntityGraph): EntityGraph => {
  let g = graph ?? new EntityGraph()
  for (const e of events) g = evolve(g, e)
  return g
}
