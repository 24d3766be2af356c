/**
 * Streaming a range of the log with `COPY (SELECT ...) TO STDOUT (FORMAT binary)`: the fastest
 * way to read many events (design §10: about twice keyset pages), with no escaping to undo —
 * each field is a length and its bytes. Rows are handed to the caller as they arrive, a chunk at
 * a time, so memory stays bounded however long the range.
 *
 * Binary COPY layout: an 11-byte signature, int32 flags, int32 header-extension length (and the
 * extension); then per row an int16 field count (-1 ends the data) and per field an int32
 * length (-1 for NULL) followed by that many bytes.
 */
import type { LogEntry } from '@vitrage-persistor/core'
import type pg from 'pg'
import { to as copyTo } from 'pg-copy-streams'

const SIGNATURE_LENGTH = 11

export interface StreamOptions {
  readonly eventTypes?: readonly string[]
  /** After each statement: every event up to this id has been handed to onEntry. */
  readonly onThrough?: (id: number) => void
}

// An escape string: read the same whatever standard_conforming_strings says (with it off, a
// backslash in a plain '…' literal escapes the quote that follows).
const quoteLiteral = (s: string): string => `E'${s.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`

/** The COPY statement (pure). Ids are integers and types are quoted, since COPY takes no parameters. */
export const streamSql = (afterId: number, toId: number, options: StreamOptions = {}): string => {
  if (!Number.isSafeInteger(afterId) || !Number.isSafeInteger(toId)) throw new TypeError('ids must be integers')
  const types = options.eventTypes === undefined ? '' : ` AND event_type IN (${options.eventTypes.map(quoteLiteral).join(', ')})`
  return `COPY (SELECT id, message_id::text, event_type, payload::text FROM event WHERE id > ${afterId} AND id <= ${toId}${types} ORDER BY id) TO STDOUT (FORMAT binary)`
}

/** A field's length at `at`; the streamed columns are NOT NULL, so -1 is a defect. */
const fieldLength = (b: Buffer, at: number, name: string): number => {
  const n = b.readInt32BE(at)
  if (n < 0) throw new Error(`binary COPY: ${name} is NULL`)
  return n
}

/**
 * How much of a new chunk is joined to the partial row left by the previous one: enough for
 * any ordinary row, so that the rest of the chunk is parsed where it lies instead of being copied
 * (joining whole chunks copied every byte of a replay once more). A longer row joins the chunk.
 */
const STRADDLE_BYTES = 16 * 1024

/** The byte length of the row starting `b`, when its four field lengths are in `b`; else 0. */
const rowLength = (b: Buffer): number => {
  if (b.length < 2 || b.readInt16BE(0) !== 4) return 0
  let p = 2
  for (let f = 0; f < 4; f++) {
    if (p + 4 > b.length) return 0
    p += 4 + Math.max(b.readInt32BE(p), 0)
  }
  return p
}

/** Incremental parser of binary COPY output into log entries. */
export class BinaryCopyParser {
  /** The start of a row (or of the header) that the previous chunk cut off. */
  private partial: Buffer = Buffer.alloc(0)
  /** Chunks after `partial` that do not yet complete its row, and their total length. */
  private pending: Buffer[] = []
  private pendingLength = 0
  /** The length of the row in `partial`, once its field lengths have arrived (else 0). */
  private need = 0
  private headerDone = false
  private ended = false
  private count = 0

  constructor(private readonly onEntry: (e: LogEntry) => void) {}

  /** Consumes a chunk; returns how many entries it completed. */
  push(chunk: Buffer): number {
    const before = this.count
    if (this.partial.length > 0 && this.need > 0 && this.partial.length + this.pendingLength + chunk.length < this.need) {
      // A long row still incomplete: keep a copy of the chunk (the caller may reuse it) and join
      // once the row is complete (joining at every chunk was quadratic in the row's length).
      this.pending.push(Buffer.from(chunk))
      this.pendingLength += chunk.length
      return 0
    }
    if (this.pending.length > 0) {
      this.partial = Buffer.concat([this.partial, ...this.pending])
      this.pending = []
      this.pendingLength = 0
    }
    let b = chunk
    let offset = 0
    if (this.partial.length > 0) {
      const carried = this.partial.length
      const joined = Buffer.concat([this.partial, chunk.subarray(0, STRADDLE_BYTES)])
      const reached = this.rows(joined, 0)
      if (reached > carried) {
        // The cut row is complete: go on in the chunk itself.
        offset = reached - carried
      } else if (joined.length === carried + chunk.length) {
        // The whole chunk was joined and the row is still not complete.
        this.keep(joined, reached, true)
        return this.count - before
      } else {
        // A row longer than the join: join the whole chunk.
        b = Buffer.concat([this.partial, chunk])
      }
    }
    offset = this.rows(b, offset)
    this.keep(b, offset, b !== chunk)
    return this.count - before
  }

  /** Keeps `b` from `offset` (an incomplete row) for the next push; `owned` when nobody else holds `b`. */
  private keep(b: Buffer, offset: number, owned: boolean): void {
    if (offset >= b.length) {
      this.partial = Buffer.alloc(0)
      this.need = 0
      return
    }
    this.partial = owned ? b.subarray(offset) : Buffer.from(b.subarray(offset))
    this.need = this.headerDone ? rowLength(this.partial) : 0
  }

  /** Parses the complete rows of `b` from `offset`; returns where the first incomplete one starts. */
  private rows(b: Buffer, offset: number): number {
    if (!this.headerDone) {
      if (b.length < offset + SIGNATURE_LENGTH + 8) return offset
      const extension = b.readInt32BE(offset + SIGNATURE_LENGTH + 4)
      if (b.length < offset + SIGNATURE_LENGTH + 8 + extension) return offset
      offset += SIGNATURE_LENGTH + 8 + extension
      this.headerDone = true
    }
    while (!this.ended && offset + 2 <= b.length) {
      const fields = b.readInt16BE(offset)
      if (fields === -1) {
        this.ended = true
        offset += 2
        break
      }
      // id (int8), message_id, event_type, payload (text): fixed by streamSql. Field starts and
      // lengths live in locals, and the id is read as two halves: no array and no BigInt per
      // row (both showed in profiles of replay).
      if (fields !== 4) throw new Error(`binary COPY row with ${fields} fields, expected 4`)
      let p = offset + 2
      if (p + 12 > b.length) break
      if (b.readInt32BE(p) !== 8) throw new Error(`binary COPY id of ${b.readInt32BE(p)} bytes, expected 8`)
      const idAt = p + 4
      p += 12
      if (p + 4 > b.length) break
      const messageLength = fieldLength(b, p, 'message_id')
      const messageAt = p + 4
      p = messageAt + messageLength
      if (p + 4 > b.length) break
      const typeLength = fieldLength(b, p, 'event_type')
      const typeAt = p + 4
      p = typeAt + typeLength
      if (p + 4 > b.length) break
      const payloadLength = fieldLength(b, p, 'payload')
      const payloadAt = p + 4
      p = payloadAt + payloadLength
      if (p > b.length) break
      const high = b.readInt32BE(idAt)
      this.onEntry({
        id: high * 0x1_0000_0000 + b.readUInt32BE(idAt + 4),
        messageId: b.toString('latin1', messageAt, messageAt + messageLength),
        eventType: b.toString('utf8', typeAt, typeAt + typeLength),
        payload: JSON.parse(b.toString('utf8', payloadAt, payloadAt + payloadLength)) as Record<string, unknown>,
      })
      this.count++
      offset = p
    }
    return offset
  }
}

/**
 * How the range is cut into COPY statements. Every pooled statement is bounded by the statement
 * timeout (60 s by default), and a COPY runs as long as its consumer takes: one statement for a
 * whole range failed any replay that took longer (a standby's first build of a large history,
 * retried from scratch for ever). Ids alone do not bound a statement's time: 100,000 ids of
 * ~700-byte graph changes stream and apply in ~1 s here, 100,000 ids of 1 MiB payloads would be
 * 100 GB. So each statement is sized from the one before it: no more bytes than `bytes`, no
 * longer than `timeoutShare` of the session's statement_timeout, no more ids than `maxIds`, and
 * at most 8 times the ids of the last one; the first covers `startIds`.
 */
export interface StreamChunking {
  readonly startIds: number
  readonly maxIds: number
  readonly bytes: number
  readonly timeoutShare: number
}

export const STREAM_CHUNKING: StreamChunking = { startIds: 1_000, maxIds: 100_000, bytes: 64 * 1024 * 1024, timeoutShare: 1 / 6 }

/** What the last statement covered and cost. */
export interface ChunkMeasure {
  readonly ids: number
  readonly bytes: number
  readonly ms: number
}

/** The ids the next statement covers (pure); `timeoutMs` 0: no statement timeout. */
export const nextChunkIds = (last: ChunkMeasure, chunking: StreamChunking, timeoutMs: number): number => {
  let ids = Math.min(chunking.maxIds, last.ids * 8)
  if (last.bytes > 0) ids = Math.min(ids, Math.floor((last.ids * chunking.bytes) / last.bytes))
  if (timeoutMs > 0 && last.ms > 0) ids = Math.min(ids, Math.floor((last.ids * timeoutMs * chunking.timeoutShare) / last.ms))
  return Math.max(1, ids)
}

const checkChunking = (c: StreamChunking): void => {
  for (const k of ['startIds', 'maxIds', 'bytes'] as const) {
    if (!Number.isSafeInteger(c[k]) || c[k] < 1) throw new TypeError(`streamRange: ${k} must be a positive integer, got ${c[k]}`)
  }
  if (!(c.timeoutShare > 0 && c.timeoutShare <= 1)) throw new TypeError(`streamRange: timeoutShare must be in (0, 1], got ${c.timeoutShare}`)
}

/**
 * Streams (afterId, toId] to `onEntry` in id order; resolves with the number of entries. The
 * range is read in statements sized by `chunking` (see StreamChunking), in one read-only
 * snapshot (REPEATABLE READ): a prune that commits meanwhile cannot take events from the later
 * statements, as it could not from one statement. The ordered primary-key scan is forced, as for
 * pages (migration 0005): stale statistics must not turn it into a sort of the whole range.
 */
export const streamRange = async (
  client: pg.PoolClient | pg.Client,
  afterId: number,
  toId: number,
  options: StreamOptions,
  onEntry: (e: LogEntry) => void,
  chunking: Partial<StreamChunking> = {},
): Promise<number> => {
  const c: StreamChunking = { ...STREAM_CHUNKING, ...chunking }
  checkChunking(c)
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
  try {
    await client.query('SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off')
    // In milliseconds (the setting's unit); 0 when there is none.
    const timeoutMs = Number((await client.query<{ ms: string }>("SELECT setting AS ms FROM pg_settings WHERE name = 'statement_timeout'")).rows[0]?.ms ?? 0)
    let count = 0
    let ids = Math.min(c.startIds, c.maxIds)
    for (let from = afterId; from < toId; ) {
      const to = Math.min(toId, from + ids)
      const started = performance.now()
      const read = await copyOut(client, streamSql(from, to, options), onEntry)
      count += read.count
      ids = nextChunkIds({ ids: to - from, bytes: read.bytes, ms: performance.now() - started }, c, timeoutMs)
      from = to
      options.onThrough?.(to)
    }
    await client.query('COMMIT')
    return count
  } catch (e) {
    // A ROLLBACK would queue behind the COPY still streaming; the connection is dropped instead.
    if (!(e instanceof StreamConsumerDefect)) await client.query('ROLLBACK').catch(() => {})
    throw e
  }
}

/**
 * What the caller's `onEntry` threw (or the parser, on bytes it cannot read): a defect, not a
 * database failure. The COPY is still running on the connection, so the connection is dropped
 * (withClient), not rolled back, and the defect is rethrown, not turned into a Failure.
 */
export class StreamConsumerDefect extends Error {
  constructor(readonly defect: unknown) {
    super(`the stream's consumer failed: ${defect instanceof Error ? defect.message : String(defect)}`)
    this.name = 'StreamConsumerDefect'
  }
}

const copyOut = (client: pg.PoolClient | pg.Client, sql: string, onEntry: (e: LogEntry) => void): Promise<{ count: number; bytes: number }> =>
  new Promise((resolve, reject) => {
    let count = 0
    let bytes = 0
    let failed = false
    const parser = new BinaryCopyParser(onEntry)
    const stream = client.query(copyTo(sql))
    stream.on('data', (chunk: Buffer) => {
      if (failed) return
      bytes += chunk.length
      try {
        count += parser.push(chunk)
      } catch (e) {
        // Settled here: a destroyed copy stream does not always emit 'error'.
        failed = true
        reject(new StreamConsumerDefect(e))
        stream.destroy()
      }
    })
    stream.on('error', reject)
    stream.on('end', () => resolve({ count, bytes }))
  })
