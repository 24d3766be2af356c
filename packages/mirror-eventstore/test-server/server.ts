/**
 * An in-process stand-in for EventStoreDB, for tests only. It is a grpc-js server built from the
 * service definitions generated inside @eventstore/db-client, so the mirror's tests drive the real
 * client over the real wire protocol: ServerFeatures.GetSupportedMethods, Streams.Append,
 * Streams.BatchAppend and Streams.Read of one stream. README.md lists what it leaves out.
 */
import type { Writable } from 'node:stream'
import * as grpc from '@grpc/grpc-js'
import featuresGrpc from '@eventstore/db-client/generated/serverfeatures_grpc_pb.js'
import featuresPb from '@eventstore/db-client/generated/serverfeatures_pb.js'
import streamsGrpc from '@eventstore/db-client/generated/streams_grpc_pb.js'
import streamsPb from '@eventstore/db-client/generated/streams_pb.js'
import sharedPb from '@eventstore/db-client/generated/shared_pb.js'
import statusPb from '@eventstore/db-client/generated/status_pb.js'
import codePb from '@eventstore/db-client/generated/code_pb.js'
import anyPb from 'google-protobuf/google/protobuf/any_pb.js'
import emptyPb from 'google-protobuf/google/protobuf/empty_pb.js'
import type { AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, ReadReq, ReadResp } from
  '@eventstore/db-client/generated/streams_pb.js'
import type { StreamIdentifier, UUID } from '@eventstore/db-client/generated/shared_pb.js'

export interface StoredEvent {
  /** RFC 4122 UUID, lower case: the real server answers with .NET's Guid.ToString(). */
  readonly id: string
  readonly type: string
  /** As proposed; a read answers application/json or application/octet-stream, as the real server does. */
  readonly contentType: string
  readonly data: Uint8Array
  readonly customMetadata: Uint8Array
  readonly revision: bigint
  /** Global log position, shared by all streams; commit and prepare position are equal. */
  readonly position: bigint
  /** 100 ns ticks since 1970-01-01 UTC, the unit of the real server's `created` metadata. */
  readonly created: bigint
}

export type ExpectedRevision = 'any' | 'no_stream' | 'stream_exists' | bigint

/** Where an injected append failure strikes: before anything is stored, or after (a lost acknowledgement). */
export type AppendFault = 'before-write' | 'after-write'

export interface TestEventStoreOptions {
  /**
   * false: GetSupportedMethods answers UNIMPLEMENTED, as servers before 21.10 do, so the client
   * falls back to Streams.Append. Default true: BatchAppend is advertised and the client uses it.
   */
  readonly batchAppend?: boolean
}

/** gRPC calls received per method, refused ones included. */
export interface CallCounts {
  getSupportedMethods: number
  append: number
  batchAppend: number
  read: number
}

type Proposed = Pick<StoredEvent, 'id' | 'type' | 'contentType' | 'data' | 'customMetadata'>

type AppendResult =
  | { readonly kind: 'written' | 'idempotent', readonly revision: bigint, readonly position?: bigint }
  /** current is -1n when the stream does not exist. */
  | { readonly kind: 'wrong-expected-version', readonly current: bigint }

interface StreamState {
  readonly events: StoredEvent[]
  /** For the idempotency check of `any` and `stream_exists` appends, which looks events up by id. */
  readonly byId: Map<string, StoredEvent>
}

const JSON_TYPE = 'application/json'
const TICKS_PER_MS = 10_000n
const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** What a handler answers a call with; grpc-js takes it as the call's final status. */
type Status = Partial<grpc.StatusObject>

/** A request the server cannot make sense of; answered INVALID_ARGUMENT. */
class BadRequest extends Error {}

const unavailable = (details: string): Status => ({ code: grpc.status.UNAVAILABLE, details })

const statusOf = (error: unknown): Status =>
  error instanceof BadRequest
    ? { code: grpc.status.INVALID_ARGUMENT, details: error.message }
    : { code: grpc.status.INTERNAL, details: String(error) }

/** Ends a streaming call with a status, once: messages may still arrive after it has ended. */
const fail = (call: Writable, status: Status): void => {
  if (!call.writableEnded) call.emit('error', status)
}

const streamNameOf = (identifier: StreamIdentifier | undefined): string => {
  if (identifier === undefined) throw new BadRequest('missing stream identifier')
  return Buffer.from(identifier.getStreamName_asU8()).toString('utf8')
}

// The 6.2.1 client sends every UUID (event ids, correlation ids) in the string form.
const uuidOf = (uuid: UUID | undefined): string => {
  const text = uuid?.hasString() === true ? uuid.getString() : ''
  if (!UUID_TEXT.test(text)) throw new BadRequest(`not a UUID in string form: ${JSON.stringify(text)}`)
  return text.toLowerCase()
}

const proposedOf = (message: AppendReq.ProposedMessage | BatchAppendReq.ProposedMessage | undefined): Proposed => {
  if (message === undefined) throw new BadRequest('missing proposed message')
  const metadata = message.getMetadataMap()
  const type = metadata.get('type')
  const contentType = metadata.get('content-type')
  // The real server answers RequiredMetadataPropertyMissing; the client always sends both.
  if (type === undefined || contentType === undefined) throw new BadRequest('type and content-type are required')
  return {
    id: uuidOf(message.getId()),
    type,
    contentType,
    data: message.getData_asU8(),
    customMetadata: message.getCustomMetadata_asU8(),
  }
}

const expectedOfAppend = (o: AppendReq.Options): ExpectedRevision =>
  o.hasAny() ? 'any' : o.hasNoStream() ? 'no_stream' : o.hasStreamExists() ? 'stream_exists'
    : o.hasRevision() ? BigInt(o.getRevision()) : badExpected()

const expectedOfBatch = (o: BatchAppendReq.Options): ExpectedRevision =>
  o.hasAny() ? 'any' : o.hasNoStream() ? 'no_stream' : o.hasStreamExists() ? 'stream_exists'
    : o.hasStreamPosition() ? BigInt(o.getStreamPosition()) : badExpected()

const badExpected = (): never => {
  throw new BadRequest('missing expected stream revision')
}

const appendResp = (result: AppendResult, expected: ExpectedRevision): AppendResp => {
  const resp = new streamsPb.AppendResp()
  if (result.kind === 'wrong-expected-version') {
    // Not a gRPC error: Streams.Append reports a failed concurrency check inside a normal reply.
    const wrong = new streamsPb.AppendResp.WrongExpectedVersion()
    if (result.current < 0n) wrong.setCurrentNoStream(new sharedPb.Empty())
    else wrong.setCurrentRevision(result.current.toString())
    if (expected === 'any') wrong.setExpectedAny(new sharedPb.Empty())
    else if (expected === 'no_stream') wrong.setExpectedNoStream(new sharedPb.Empty())
    else if (expected === 'stream_exists') wrong.setExpectedStreamExists(new sharedPb.Empty())
    else wrong.setExpectedRevision(expected.toString())
    return resp.setWrongExpectedVersion(wrong)
  }
  const success = new streamsPb.AppendResp.Success()
  if (result.revision < 0n) success.setNoStream(new sharedPb.Empty())
  else success.setCurrentRevision(result.revision.toString())
  if (result.position === undefined) success.setNoPosition(new sharedPb.Empty())
  else {
    const position = result.position.toString()
    success.setPosition(new streamsPb.AppendResp.Position().setCommitPosition(position).setPreparePosition(position))
  }
  return resp.setSuccess(success)
}

const batchAppendResp = (correlation: UUID | undefined, identifier: StreamIdentifier | undefined,
  result: AppendResult, expected: ExpectedRevision): BatchAppendResp => {
  // The client reads the stream name from the reply to name the stream in its errors.
  const resp = new streamsPb.BatchAppendResp().setCorrelationId(correlation).setStreamIdentifier(identifier)
  if (result.kind === 'wrong-expected-version') {
    // As the real server: a google.rpc.Status with code ALREADY_EXISTS whose details pack the versions.
    const wrong = new sharedPb.WrongExpectedVersion()
    if (result.current < 0n) wrong.setCurrentNoStream(new emptyPb.Empty())
    else wrong.setCurrentStreamRevision(result.current.toString())
    if (expected === 'any') wrong.setExpectedAny(new emptyPb.Empty())
    else if (expected === 'no_stream') wrong.setExpectedNoStream(new emptyPb.Empty())
    else if (expected === 'stream_exists') wrong.setExpectedStreamExists(new emptyPb.Empty())
    else wrong.setExpectedStreamPosition(expected.toString())
    const details = new anyPb.Any()
    details.pack(wrong.serializeBinary(), 'event_store.client.WrongExpectedVersion')
    return resp.setError(new statusPb.Status()
      .setCode(codePb.Code.ALREADY_EXISTS).setMessage('WrongExpectedVersion').setDetails(details))
  }
  const success = new streamsPb.BatchAppendResp.Success()
  if (result.revision < 0n) success.setNoStream(new emptyPb.Empty())
  else success.setCurrentRevision(result.revision.toString())
  if (result.position === undefined) success.setNoPosition(new emptyPb.Empty())
  else {
    const position = result.position.toString()
    success.setPosition(new sharedPb.AllStreamPosition().setCommitPosition(position).setPreparePosition(position))
  }
  return resp.setSuccess(success)
}

const readEventResp = (identifier: StreamIdentifier, event: StoredEvent): ReadResp => {
  const position = event.position.toString()
  const recorded = new streamsPb.ReadResp.ReadEvent.RecordedEvent()
    .setId(new sharedPb.UUID().setString(event.id))
    .setStreamIdentifier(identifier)
    .setStreamRevision(event.revision.toString())
    .setCommitPosition(position)
    .setPreparePosition(position)
    .setData(event.data)
    .setCustomMetadata(event.customMetadata)
  // The real server keeps only an is-json flag, so any other content type reads back as octet-stream.
  recorded.getMetadataMap()
    .set('type', event.type)
    .set('content-type', event.contentType === JSON_TYPE ? JSON_TYPE : 'application/octet-stream')
    .set('created', event.created.toString())
  // The positions travel on the recorded event; the outer commit_position is for $all reads.
  const read = new streamsPb.ReadResp.ReadEvent().setEvent(recorded).setNoPosition(new sharedPb.Empty())
  return new streamsPb.ReadResp().setEvent(read)
}

const supportedMethods = (): featuresPb.SupportedMethods => {
  const method = (name: string) => new featuresPb.SupportedMethod()
    .setServiceName('event_store.client.streams.streams').setMethodName(name)
  return new featuresPb.SupportedMethods()
    .setEventStoreServerVersion('0.0.0-test-server')
    .setMethodsList([method('read'), method('append'), method('batchappend')])
}

export class TestEventStore {
  readonly port: number
  readonly #server: grpc.Server
  readonly #batchAppend: boolean
  readonly #streams = new Map<string, StreamState>()
  /** Open BatchAppend calls: the client keeps one per channel, so an outage has to break them. */
  readonly #batchCalls = new Set<grpc.ServerDuplexStream<BatchAppendReq, BatchAppendResp>>()
  readonly #calls: CallCounts = { getSupportedMethods: 0, append: 0, batchAppend: 0, read: 0 }
  #nextPosition = 0n
  #refused = false
  #faults = 0
  #faultWhen: AppendFault = 'before-write'
  #faultSkip = 0
  #closed = false

  /** Listens on 127.0.0.1, on a free port. */
  static async start(options: TestEventStoreOptions = {}): Promise<TestEventStore> {
    const server = new grpc.Server()
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(),
        (error, bound) => error === null ? resolve(bound) : reject(error))
    })
    return new TestEventStore(server, port, options.batchAppend ?? true)
  }

  private constructor(server: grpc.Server, port: number, batchAppend: boolean) {
    this.#server = server
    this.port = port
    this.#batchAppend = batchAppend
    server.addService(featuresGrpc.ServerFeaturesService, { getSupportedMethods: this.#getSupportedMethods })
    // Methods left out (delete, tombstone) answer UNIMPLEMENTED, grpc-js's default.
    server.addService(streamsGrpc.StreamsService,
      { append: this.#appendCall, batchAppend: this.#batchAppendCall, read: this.#readCall })
  }

  /** For EventStoreDBClient.connectionString: single node, no TLS, no credentials. */
  get connectionString(): string {
    return `esdb://127.0.0.1:${this.port}?tls=false`
  }

  /**
   * While on, every call answers UNAVAILABLE, as when the server is down; turning it on also
   * breaks the open BatchAppend calls, as a dropped connection would.
   */
  refuse(on: boolean): void {
    this.#refused = on
    if (on) for (const call of this.#batchCalls) fail(call, unavailable('refusing calls'))
  }

  /**
   * The next `count` append requests (one per appendToStream) fail with UNAVAILABLE, either before
   * anything is stored or after the events are stored, which is a lost acknowledgement. On
   * BatchAppend the whole call fails, as it would if the connection dropped. `skip` appends
   * succeed first, to strike in the middle of a run of pipelined appends.
   */
  failNextAppends(count: number, when: AppendFault = 'before-write', skip = 0): void {
    this.#faults = count
    this.#faultWhen = when
    this.#faultSkip = skip
  }

  /** Which methods the client called: tells the BatchAppend path from the Append fallback. */
  calls(): Readonly<CallCounts> {
    return { ...this.#calls }
  }

  /** A snapshot of every stream's events, in revision order. */
  streams(): ReadonlyMap<string, readonly StoredEvent[]> {
    return new Map([...this.#streams].map(([name, state]) => [name, [...state.events]]))
  }

  /** Idempotent. Open calls are cut off: the client's BatchAppend call would otherwise stay open forever. */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true
      this.#server.forceShutdown()
    }
    return Promise.resolve()
  }

  #takeFault(): AppendFault | undefined {
    if (this.#faults === 0) return undefined
    if (this.#faultSkip > 0) {
      this.#faultSkip -= 1
      return undefined
    }
    this.#faults -= 1
    return this.#faultWhen
  }

  /**
   * The concurrency and idempotency check of the real server (IndexWriter.CheckCommit), for the
   * cases a stream without metadata or deletion can reach.
   */
  #append(stream: string, expected: ExpectedRevision, proposed: readonly Proposed[]): AppendResult {
    const state = this.#streams.get(stream)
    const events = state?.events ?? []
    const current = BigInt(events.length) - 1n
    const wrong = { kind: 'wrong-expected-version', current } as const
    if (expected === 'any' || expected === 'stream_exists') {
      if (expected === 'stream_exists' && current < 0n) return wrong
      // By id: all already in this stream is a retry; none is a new write; some is neither.
      const found = proposed.map((p) => state?.byId.get(p.id))
      const last = found.at(-1)
      if (found[0] === undefined) return this.#write(stream, proposed)
      if (last === undefined || found.includes(undefined)) return wrong
      return { kind: 'idempotent', revision: last.revision, position: last.position }
    }
    const at = expected === 'no_stream' ? -1n : expected
    if (at === current) return this.#write(stream, proposed)
    if (at > current || proposed.length === 0) return wrong
    // Behind the stream: a retry only if the events after `at` carry the proposed ids, in order.
    const start = Number(at) + 1
    if (!proposed.every((p, i) => events[start + i]?.id === p.id)) return wrong
    const last = events[start + proposed.length - 1]
    return last === undefined ? wrong : { kind: 'idempotent', revision: last.revision, position: last.position }
  }

  #write(stream: string, proposed: readonly Proposed[]): AppendResult {
    const state = this.#streams.get(stream) ?? { events: [], byId: new Map<string, StoredEvent>() }
    const created = BigInt(Date.now()) * TICKS_PER_MS
    for (const p of proposed) {
      const revision = BigInt(state.events.length)
      // Fields listed, not spread: spreading made this the test server's hottest line (10 µs an event).
      const event: StoredEvent = {
        id: p.id, type: p.type, contentType: p.contentType, data: p.data, customMetadata: p.customMetadata,
        revision, position: this.#nextPosition++, created,
      }
      state.events.push(event)
      state.byId.set(event.id, event)
    }
    const last = state.events.at(-1)
    // An empty append to a missing stream succeeds without creating it.
    if (last === undefined) return { kind: 'written', revision: -1n }
    this.#streams.set(stream, state)
    return { kind: 'written', revision: last.revision, position: proposed.length > 0 ? last.position : undefined }
  }

  #getSupportedMethods = (_call: unknown, callback: grpc.sendUnaryData<featuresPb.SupportedMethods>): void => {
    this.#calls.getSupportedMethods += 1
    if (this.#refused) callback(unavailable('refusing calls'))
    else if (!this.#batchAppend) callback({ code: grpc.status.UNIMPLEMENTED, details: 'ServerFeatures disabled' })
    else callback(null, supportedMethods())
  }

  /** Client streaming: one message with the options, then one per event; one reply at the end. */
  #appendCall = (call: grpc.ServerReadableStream<AppendReq, AppendResp>,
    callback: grpc.sendUnaryData<AppendResp>): void => {
    this.#calls.append += 1
    if (this.#refused) return callback(unavailable('refusing calls'))
    const messages: AppendReq[] = []
    call.on('data', (message: AppendReq) => messages.push(message))
    call.on('end', () => {
      if (this.#refused) return callback(unavailable('refusing calls'))
      try {
        const [first, ...rest] = messages
        const options = first?.getOptions()
        if (options === undefined) throw new BadRequest('the first message must carry the options')
        const stream = streamNameOf(options.getStreamIdentifier())
        const expected = expectedOfAppend(options)
        const proposed = rest.map((m) => proposedOf(m.getProposedMessage()))
        const fault = this.#takeFault()
        if (fault === 'before-write') return callback(unavailable('injected failure before write'))
        const result = this.#append(stream, expected, proposed)
        if (fault === 'after-write') return callback(unavailable('injected failure after write'))
        callback(null, appendResp(result, expected))
      } catch (error) {
        callback(statusOf(error))
      }
    })
  }

  /**
   * Bidirectional and long-lived: each append is a run of messages sharing a correlation id, the
   * first carrying the options and the last marked is_final; each append gets one reply.
   */
  #batchAppendCall = (call: grpc.ServerDuplexStream<BatchAppendReq, BatchAppendResp>): void => {
    this.#calls.batchAppend += 1
    if (this.#refused) return fail(call, unavailable('refusing calls'))
    this.#batchCalls.add(call)
    call.on('close', () => this.#batchCalls.delete(call))
    const pending = new Map<string, { options: BatchAppendReq.Options | undefined, proposed: Proposed[] }>()
    call.on('data', (message: BatchAppendReq) => {
      if (call.writableEnded) return
      try {
        const correlation = uuidOf(message.getCorrelationId())
        const batch = pending.get(correlation) ?? { options: message.getOptions(), proposed: [] }
        pending.set(correlation, batch)
        for (const m of message.getProposedMessagesList()) batch.proposed.push(proposedOf(m))
        if (!message.getIsFinal()) return
        pending.delete(correlation)
        if (batch.options === undefined) throw new BadRequest('the first message must carry the options')
        const identifier = batch.options.getStreamIdentifier()
        const stream = streamNameOf(identifier)
        const expected = expectedOfBatch(batch.options)
        const fault = this.#takeFault()
        if (fault === 'before-write') return fail(call, unavailable('injected failure before write'))
        const result = this.#append(stream, expected, batch.proposed)
        if (fault === 'after-write') return fail(call, unavailable('injected failure after write'))
        call.write(batchAppendResp(message.getCorrelationId(), identifier, result, expected))
      } catch (error) {
        fail(call, statusOf(error))
      }
    })
    call.on('end', () => call.end())
  }

  /** Server streaming, one stream only: events in the asked direction, or one stream_not_found message. */
  #readCall = (call: grpc.ServerWritableStream<ReadReq, ReadResp>): void => {
    this.#calls.read += 1
    if (this.#refused) return fail(call, unavailable('refusing calls'))
    const options = call.request.getOptions()
    const streamOptions = options?.getStream()
    const identifier = streamOptions?.getStreamIdentifier()
    if (options === undefined || streamOptions === undefined || identifier === undefined || !options.hasCount()) {
      return fail(call, { code: grpc.status.UNIMPLEMENTED, details: 'only counted reads of one stream' })
    }
    const events = this.#streams.get(streamNameOf(identifier))?.events
    if (events === undefined) {
      call.write(new streamsPb.ReadResp().setStreamNotFound(
        new streamsPb.ReadResp.StreamNotFound().setStreamIdentifier(identifier)))
      call.end()
      return
    }
    const backwards = options.getReadDirection() === streamsPb.ReadReq.Options.ReadDirection.BACKWARDS
    const count = Math.min(events.length, Number(options.getCount()))
    // `end`, and any revision past it: forwards reads nothing, backwards starts at the last event.
    const end = backwards ? events.length - 1 : events.length
    const start = streamOptions.hasRevision() ? Math.min(Number(streamOptions.getRevision()), end)
      : streamOptions.hasEnd() ? end : 0
    const page = backwards
      ? events.slice(Math.max(0, start - count + 1), start + 1).reverse()
      : events.slice(start, start + count)
    for (const event of page) call.write(readEventResp(identifier, event))
    call.end()
  }
}
