export {
  type CanonicalEdge,
  type CanonicalFormat,
  type CanonicalGraph,
  type CanonicalVertex,
  canonicalJson,
  fromCanonical,
  toCanonical,
} from './graph/canonical.js'
export { applyEvent, evolve, replayGraph } from './graph/evolve.js'
export { compareCodePoints, type Json, type Properties } from './graph/json.js'
export {
  type Direction,
  EntityGraph,
  type GraphAnomaly,
  type GraphAnomalyReason,
  type GraphEdge,
  type GraphVertex,
  type GraphWriter,
  RECENT_ANOMALIES,
} from './graph/model.js'
export { type GraphSummary, summarize } from './graph/summary.js'
export { HISTORY_EVENT_TYPES, historyCommand } from './history/commands.js'
export { END_OPEN_PUBLISHER, END_OPEN_REASON, endOpenEvents, type OpenHistory } from './history/end-open.js'
export { type RcaGraph, type RcaLink, type RcaOptions, rca } from './history/rca.js'
export { defaultHistoryRunnerOptions, HistoryRunner, type HistoryRunnerDeps, type HistoryRunnerHooks, type HistoryRunnerOptions } from './history/runner.js'
export { caughtUp, type FollowOptions, type FollowState, followGraph } from './graph/follow.js'
export {
  decodeGraphSnapshot,
  captureGraphSnapshot,
  encodeGraphSnapshot,
  GRAPH_SNAPSHOT_FORMAT,
  GRAPH_SNAPSHOT_FORMAT_CANONICAL,
  GRAPH_SNAPSHOT_KIND,
  type GraphAt,
  graphAt,
  type GraphSources,
  type GraphTarget,
  type ReplayOptions,
  type ReplayProgress,
  REPLAY_ABORTED,
  type ReplayFailure,
  replayInto,
} from './graph/replay.js'
