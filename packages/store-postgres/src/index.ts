export { type AppendResult, appendBatch, appendIsolating, type IsolatedAppendResult, type PreparedEvent, prepareEvent } from './append.js'
export { classifyPgError } from './classify.js'
export { UNANSWERED } from './connection.js'
export { type Lease, tryLease } from './lease.js'
export { copyField, copyRow } from './copy-text.js'
export { ensureDatabase, INGEST_SCHEMA_VERSION, loadMigrations, MIGRATE_LOCK, type MigrateOptions, type MigrateReport, type Migration, migrate, type MigrationState, migrationState, pendingMigrations, schemaTemplate, schemaVersion, setupDatabase } from './migrate.js'
export { pageQuery, type RawEvent, type ReadOptions, readEventsById, readPage, readRawPage } from './read.js'
export { type EventStoreOptions, type HeadEvent, PgEventStore } from './store.js'
export { APPEND_CHANNEL, listenForAppends } from './notifications.js'
export { lastEventAtOrBefore, latestSnapshot, listSnapshots, prunedBelow, pruneEvents, retainSnapshots, saveSnapshot } from './snapshots.js'
export { CheckpointConflict, CheckpointPastHead, type CheckpointInfo, listCheckpoints, moveCheckpoint, raiseCheckpoint, readCheckpoint, removeCheckpoint, setCheckpoint, settlePartitionCheckpoints } from './checkpoints.js'
export { applyCommands, applyHistory, resetHistory } from './history.js'
export { applyHistoryRange, historyRangeStatement } from './history-range.js'
export {
  ALARM_COLUMNS,
  type AlarmColumn,
  type AlarmQuery,
  alarmsById,
  alarmsQuery,
  causalEdges,
  countActiveAlarms,
  QueryError,
  queryAlarms,
  SEVERITIES,
} from './history-queries.js'
export { BinaryCopyParser, type ChunkMeasure, nextChunkIds, STREAM_CHUNKING, type StreamChunking, streamRange, streamSql } from './stream.js'
