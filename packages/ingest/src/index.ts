export { batchBySizeOrTime } from './batch.js'
export { createIngestMetrics, type IngestMetrics } from './metrics.js'
export { type AppendPort, Persistor, type PersistorDeps, type PersistorOptions, type PersistorState } from './persistor.js'
export { declareTopology, names as topologyNames, persistorQueueArguments, type Topology, type TopologyOptions } from './topology.js'
