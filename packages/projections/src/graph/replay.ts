/**
 * Building the entity graph from the log: replay (from empty or from a snapshot), snapshots,
 * the graph at a point in time. Reads go through core's ports: one streamed range when the
 * reader offers it (binary COPY), otherwise keyset pages, the next one requested while the
 * current one is applied; either way memory is the graph plus a bounded read buffer, whatever
 * the length of the history.
 */
import { promisify } from 'node:util'
import { gunzip, gzip } from 'node:zlib'
import {
  EventTypes,
  type EventLogReader,
  type Failure,
  failure,
  type LogClock,
  type NewSnapshot,
  requireNonNegativeInts,
  requirePositiveInts,
  type Snapshot,
  type SnapshotStore,
  type StoredEvent,
} from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import { canonicalJson, fromCanonical } from './canonical.js'
import { evolve } from './evolve.js'
import { EntityGraph } from './model.js'
import type { Json } from './json.js'
import { decodeColumnar, encodeColumnar, UnencodableNumber } from './snapshot-codec.js'

const gzipAsync = promisify(gzip)
const gunzipAsync = promisify(gunzip)

export const GRAPH_SNAPSHOT_KIND = 'graph'
/** Columnar, dictionary-coded (snapshot-codec.ts), gzip: what snapshots are written in. */
export const GRAPH_SNAPSHOT_FORMAT = 'columnar+gzip/2'
/** Compact canonical JSON (design §5), gzip: written before 2026-11-30, still read. */
export const GRAPH_SNAPSHOT_FORMAT_CANONICAL = 'canonical-json+gzip/1'
const READS = [GRAPH_SNAPSHOT_FORMAT, GRAPH_SNAPSHOT_FORMAT_CANONICAL]

export interface ReplayProgress {
  /** Last event id applied (or skipped past). */
  readonly position: number
  /** Where this replay stops. */
  readonly target: number
  /** Graph changes applied so far. */
  readonly applied: number
}

export interface ReplayOptions {
  /** Start after this id (the snapshot's event id, or 0). */
  readonly fromId: number
  /** Stop after this id (inclusive). */
  readonly toId: number
  /** Read keyset pages of this size instead of one streamed range. */
  readonly pageSize?: number
  readonly onProgress?: (p: ReplayProgress) => void
  /**
   * Stops the replay (between two events): it resolves with a `rejected` failure, code
   * `aborted`, and the position reached. The graph is then partly updated; a follower whose
   * subscriber went away uses it to stop building a graph nobody will read.
   */
  readonly signal?: AbortSignal
  /**
   * After each graph change applied (a page's last, reading by pages), synchronously: the graph
   * is the state as of `position`, whose event is the message `messageId`; also after each
   * streamed statement, without a message (every change up to `position` is applied, and the
   * events after the last one held none). A follower serving the graph while it catches up says
   * from this which state it serves, and that it moves.
   */
  readonly onApplied?: (position: number, messageId?: string) => void
}

/** The failure of a replay stopped through its AbortSignal. */
export const REPLAY_ABORTED = 'aborted'

class ReplayAborted extends Error {}

const GRAPH_TYPES = [EventTypes.graphChange]

/**
 * Where a replay that failed got to: every event up to `position` is applied, and `messageId` is
 * the message of the event at `position` when the replay applied it (undefined when it applied
 * nothing: `position` is then where it started).
 */
export type ReplayFailure = Failure & { readonly position: number; readonly messageId?: string }

/**
 * Applies the graph changes in (fromId, toId] to `graph`, in id order. Resolves with the
 * position reached (toId) or the read failure (the graph is then partially updated up to
 * the last page applied, reported as `position`).
 */
export const replayInto = async (reader: EventLogReader, graph: EntityGraph, options: ReplayOptions): Promise<E.Either<ReplayFailure, number>> => {
  requirePositiveInts('replayInto', { pageSize: options.pageSize })
  requireNonNegativeInts('replayInto', { fromId: options.fromId, toId: options.toId })
  const pageSize = options.pageSize ?? 5_000
  let position = options.fromId
  let messageId: string | undefined
  let applied = 0
  const { signal, onApplied } = options
  const failed = (f: Failure): E.Either<ReplayFailure, number> => E.left({ ...f, position, ...(messageId === undefined ? {} : { messageId }) })
  const aborted = (): E.Either<ReplayFailure, number> => failed(failure('rejected', `replay aborted at event ${position}`, REPLAY_ABORTED))
  if (signal?.aborted) return aborted()
  if (reader.streamRange !== undefined && options.pageSize === undefined) {
    // Fast path: one streamed read of the whole range. An abort ends it from inside the
    // callback: the store drops the connection of a COPY its consumer threw in.
    let streamed: E.Either<Failure, number>
    try {
      const streamOptions = onApplied === undefined ? { eventTypes: GRAPH_TYPES } : { eventTypes: GRAPH_TYPES, onThrough: (id: number) => onApplied(id) }
      streamed = await reader.streamRange(options.fromId, options.toId, streamOptions, (event) => {
        if (signal?.aborted) throw new ReplayAborted()
        evolve(graph, event)
        position = event.id
        messageId = event.messageId
        onApplied?.(position, messageId)
        if (++applied % 10_000 === 0) options.onProgress?.({ position, target: options.toId, applied })
      })()
    } catch (e) {
      if (e instanceof ReplayAborted) return aborted()
      throw e
    }
    if (E.isLeft(streamed)) return failed(streamed.left)
    options.onProgress?.({ position: options.toId, target: options.toId, applied })
    return E.right(options.toId)
  }
  const read = (after: number): Promise<E.Either<Failure, StoredEvent[]>> =>
    reader.readPage(after, pageSize, { eventTypes: GRAPH_TYPES, toId: options.toId })()
  let pending = position < options.toId ? read(position) : undefined
  while (pending !== undefined) {
    const page = await pending
    if (signal?.aborted) return aborted()
    if (E.isLeft(page)) return failed(page.left)
    const last = page.right.at(-1)
    // Ask for the next page before applying this one.
    pending = page.right.length === pageSize && last !== undefined ? read(last.id) : undefined
    for (const event of page.right) evolve(graph, event)
    if (last !== undefined) onApplied?.(last.id, last.messageId)
    applied += page.right.length
    if (pending !== undefined && last !== undefined) {
      position = last.id
      messageId = last.messageId
    } else position = options.toId
    options.onProgress?.({ position, target: options.toId, applied })
  }
  return E.right(Math.max(position, options.toId))
}

type SnapshotFormat = typeof GRAPH_SNAPSHOT_FORMAT | typeof GRAPH_SNAPSHOT_FORMAT_CANONICAL

/**
 * Takes the snapshot of `graph` as of `eventId` now, synchronously, and returns what compresses
 * it later: a follower goes on mutating the graph while the bytes are compressed and saved, so
 * everything read from the graph is read before this returns.
 */
export const captureGraphSnapshot = (
  graph: EntityGraph,
  eventId: number,
  format: SnapshotFormat = GRAPH_SNAPSHOT_FORMAT,
): E.Either<string, () => Promise<NewSnapshot>> => {
  let raw: Buffer
  try {
    // The canonical text would hold a bare Infinity, which no JSON reader takes back.
    if (format !== GRAPH_SNAPSHOT_FORMAT) for (const p of allProperties(graph)) for (const k in p) checkFinite(p[k] as Json)
    raw = format === GRAPH_SNAPSHOT_FORMAT ? encodeColumnar(graph) : Buffer.from(canonicalJson(graph, 'compact'), 'utf8')
  } catch (e) {
    if (e instanceof UnencodableNumber) return E.left(`no snapshot at event ${eventId}: ${e.message} (replays still give the graph)`)
    // A property nested past the stack (stored before payloads deeper than MAX_PAYLOAD_DEPTH were
    // refused): no snapshot, said, rather than a follower that exits at every start.
    if (e instanceof RangeError && /call stack/.test(e.message)) return E.left(`no snapshot at event ${eventId}: a property nests too deep to encode (replays still give the graph)`)
    throw e
  }
  const stats = { vertices: graph.vertexCount, edges: graph.edgeCount }
  return E.right(async () => ({ kind: GRAPH_SNAPSHOT_KIND, eventId, format, data: await gzipAsync(raw, { level: 1 }), stats }))
}

function* allProperties(graph: EntityGraph): Generator<Readonly<Record<string, unknown>>> {
  for (const v of graph.vertices()) yield v.properties
  for (const e of graph.edges()) yield e.properties
}

const checkFinite = (v: Json): void => {
  if (typeof v === 'number' && !Number.isFinite(v)) throw new UnencodableNumber(`a property holds ${String(v)}, which a snapshot cannot carry`)
  if (typeof v === 'object' && v !== null) for (const x of Array.isArray(v) ? v : Object.values(v)) checkFinite(x as Json)
}

/** A snapshot of `graph` as of `eventId`, columnar unless asked for the canonical format (what older versions read). */
export const encodeGraphSnapshot = async (graph: EntityGraph, eventId: number, format: SnapshotFormat = GRAPH_SNAPSHOT_FORMAT): Promise<E.Either<string, NewSnapshot>> => {
  const captured = captureGraphSnapshot(graph, eventId, format)
  return E.isLeft(captured) ? captured : E.right(await captured.right())
}

export const decodeGraphSnapshot = async (snapshot: Snapshot): Promise<E.Either<Failure, EntityGraph>> => {
  if (!READS.includes(snapshot.format)) {
    return E.left(failure('fatal', `snapshot ${snapshot.id} has format ${snapshot.format}; this version reads ${READS.join(' and ')}`))
  }
  let bytes: Buffer
  try {
    bytes = await gunzipAsync(snapshot.data)
  } catch (e) {
    return E.left(failure('fatal', `snapshot ${snapshot.id}: not gzip: ${e instanceof Error ? e.message : String(e)}`))
  }
  const graph = snapshot.format === GRAPH_SNAPSHOT_FORMAT ? decodeColumnar(bytes) : fromCanonical(bytes.toString('utf8'))
  return E.mapLeft((e: string) => failure('fatal', `snapshot ${snapshot.id}: ${e}`))(graph)
}

export type GraphTarget = { readonly eventId: number } | { readonly timestamp: string } | 'head'

export interface GraphAt {
  readonly graph: EntityGraph
  /** The state includes every event up to this id. */
  readonly position: number
  /** The snapshot it started from, if any. */
  readonly snapshot?: { readonly id: number; readonly eventId: number }
  /** Newer snapshots it could not read (a format this version does not know, corrupt), passed over. */
  readonly unreadable: ReadonlyArray<{ readonly id: number; readonly eventId: number; readonly reason: string }>
}

export interface GraphSources {
  readonly reader: EventLogReader
  readonly snapshots: SnapshotStore
  readonly clock: LogClock
}

/** Why `snapshot` is not of this log (its event is now another message), or undefined. */
const foreignSnapshot = async (reader: EventLogReader, snapshot: Snapshot): Promise<E.Either<Failure, string | undefined>> => {
  const expected = snapshot.stats['eventMessageId']
  if (typeof expected !== 'string' || reader.tip === undefined) return E.right(undefined)
  const tip = await reader.tip(snapshot.eventId)()
  if (E.isLeft(tip)) return tip
  const found = tip.right.messageIdAtPosition
  return E.right(
    found === expected
      ? undefined
      : `snapshot ${snapshot.id} was taken at event ${snapshot.eventId} = message ${expected}, which the log no longer holds there (${found === null ? 'no such event' : `message ${found}`}): the event table was restored or failed over without its snapshots`,
  )
}

/**
 * The graph as of a target (an event id, a time: the state after the last event whose
 * collector_timestamp is <= T, or the head), from the nearest snapshot at or before it plus
 * replay; identical to a full replay to the same point (tested). Refused (`rejected`) when the
 * target is beyond the head (`beyond-head`) or needs events that retention deleted (`pruned`):
 * a graph built from part of the log would be wrong without saying so.
 */
export const graphAt = async (
  sources: GraphSources,
  target: GraphTarget,
  options: { readonly useSnapshots?: boolean; readonly pageSize?: number; readonly onProgress?: (p: ReplayProgress) => void; readonly signal?: AbortSignal } = {},
): Promise<E.Either<Failure, GraphAt>> => {
  requirePositiveInts('graphAt', { pageSize: options.pageSize })
  if (target !== 'head' && 'eventId' in target) requireNonNegativeInts('graphAt', { eventId: target.eventId })
  const resolved =
    target === 'head'
      ? await sources.reader.headId()()
      : 'eventId' in target
        ? E.right(target.eventId)
        : await sources.clock.lastEventAtOrBefore(target.timestamp)()
  if (E.isLeft(resolved)) return resolved
  const toId = resolved.right
  if (typeof target === 'object' && 'eventId' in target) {
    const head = await sources.reader.headId()()
    if (E.isLeft(head)) return head
    if (toId > head.right) return E.left(failure('rejected', `event ${toId} is beyond the newest stored event (${head.right})`, 'beyond-head'))
  }
  const retained = sources.reader.prunedBelow === undefined ? E.right(1) : await sources.reader.prunedBelow()()
  if (E.isLeft(retained)) return retained
  const prunedBelow = retained.right
  // No stored event at or before the time: after a prune, one may have been deleted.
  if (typeof target === 'object' && 'timestamp' in target && toId === 0 && prunedBelow > 1) {
    return E.left(failure('rejected', `no stored event at or before ${target.timestamp}, and events below ${prunedBelow} were pruned: the graph then is not in the log`, 'pruned'))
  }
  let graph = new EntityGraph()
  let fromId = 0
  let used: GraphAt['snapshot']
  const unreadable: Array<GraphAt['unreadable'][number]> = []
  if (options.useSnapshots !== false) {
    // A snapshot this version cannot read (written by a newer one, before a rollback; corrupt)
    // is passed over for the next older one, down to a full replay: a standby still takes over.
    for (let below = toId; below >= 0; ) {
      const snap = await sources.snapshots.latestSnapshot(GRAPH_SNAPSHOT_KIND, below)()
      if (E.isLeft(snap)) return snap
      if (snap.right === undefined) break
      // Of this log? A snapshot that names its event's message is one only while the log holds
      // that message there (the event table restored without its snapshots hands ids out again).
      const foreign = await foreignSnapshot(sources.reader, snap.right)
      if (E.isLeft(foreign)) return foreign
      if (foreign.right !== undefined) {
        unreadable.push({ id: snap.right.id, eventId: snap.right.eventId, reason: foreign.right })
        below = snap.right.eventId - 1
        continue
      }
      const decoded = await decodeGraphSnapshot(snap.right)
      if (E.isRight(decoded)) {
        graph = decoded.right
        fromId = snap.right.eventId
        used = { id: snap.right.id, eventId: snap.right.eventId }
        break
      }
      unreadable.push({ id: snap.right.id, eventId: snap.right.eventId, reason: decoded.left.message })
      below = snap.right.eventId - 1
    }
  }
  // Replaying (fromId, toId] needs every event in it: none may have been pruned.
  if (toId > fromId && fromId + 1 < prunedBelow) {
    return E.left(
      failure(
        'rejected',
        `events below ${prunedBelow} were pruned and the graph at event ${toId} would need them (${used ? `nearest snapshot at event ${used.eventId}` : options.useSnapshots === false ? 'snapshots not used' : 'no snapshot at or before it'}${unreadable.length > 0 ? `; unreadable: ${unreadable.map((u) => u.reason).join('; ')}` : ''}); the oldest graph the log can give is at its oldest snapshot (snapshot list)`,
        'pruned',
      ),
    )
  }
  const replayed = await replayInto(sources.reader, graph, {
    fromId,
    toId,
    ...(options.pageSize ? { pageSize: options.pageSize } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  })
  if (E.isLeft(replayed)) return replayed
  // A prune that ran during the replay may have deleted part of its range before it was read
  // (the watermark only rises, so reading it again after is enough).
  if (toId > fromId && sources.reader.prunedBelow !== undefined) {
    const after = await sources.reader.prunedBelow()()
    if (E.isLeft(after)) return after
    if (fromId + 1 < after.right) {
      return E.left(failure('rejected', `events below ${after.right} were pruned while the graph at event ${toId} was being built from event ${fromId}; try again`, 'pruned'))
    }
  }
  return E.right({ graph, position: toId, ...(used ? { snapshot: used } : {}), unreadable })
}
