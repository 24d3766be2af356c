export { batchBySizeOrTime } from './batch.js'
export { decompressBody, SUPPORTED_COMPRESSION } from './compression.js'
export { createIngestMetrics, type IngestMetrics } from './metrics.js'
export { type AppendPort, defaultPersistorOptions, Persistor, type PersistorDeps, type PersistorOptions, type PersistorState } from './persistor.js'
export { declareTopology, names as topologyNames, osloQueueArguments, persistorQueueArguments, type Topology, type TopologyOptions } from './topology.js'
export { defaultRepublishOptions, notificationBody, priorityMismatch, type RawEventReader, republish, type RepublishFailure, type RepublishOptions, type RepublishProgress, type RepublishResult, type RepublishRoute, routingKeyOf } from './republish.js'
export {
  DEAD_LETTER_REASONS,
  type DeadLetterListing,
  type DeadLetterScanOptions,
  type DeadLetterSummary,
  describeDeadLetter,
  dropDeadLetters,
  type DropFailure,
  type DropOptions,
  type DropResult,
  inspectDeadLetters,
  MAX_INSPECT,
  type RequeueOptions,
  type RequeueResult,
  requeueDeadLetters,
  requeueHeaders,
} from './dead-letters.js'
export { type QueueState, queueStates } from './queue-status.js'
