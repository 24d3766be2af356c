/**
 * The oslo.messaging notification codec (design §3).
 *
 * v2 (driver `messagingv2`): the body is `{"oslo.version": "2.0", "oslo.message": "<JSON text>"}`
 * and the inner text is the message. v1 (driver `messaging`): the body is the message itself.
 * The message has `message_id`, `publisher_id`, `event_type`, `priority`, `payload`,
 * `timestamp` (naive UTC).
 *
 * Decoding never throws: every way a body can be wrong is a `Rejection` with a stable reason.
 * The decoded message keeps the payload's JSON text verbatim so the database, not JavaScript,
 * parses it: numbers such as 1e400 or 40-digit integers stay exact in jsonb, which a
 * JSON.parse/JSON.stringify round trip would not keep.
 */
import * as E from 'fp-ts/lib/Either.js'
import { memberText } from './json-span.js'
import { jsonbIncompatibility } from './json-text.js'
import { type Rejection, rejection } from './rejection.js'
import { parseTimestamp } from './timestamp.js'

export interface DecodedMessage {
  /** Lower-case RFC 4122 text; unique in the event table. */
  readonly messageId: string
  readonly eventType: string
  readonly publisherId: string | null
  readonly priority: string | null
  /** Canonical UTC ISO text with microseconds: `vitrage_sample_date` when present, else `timestamp`. */
  readonly collectorTimestamp: string
  /** The message object's JSON text, verbatim. */
  readonly messageText: string
  /** The payload's JSON text exactly as it stands in `messageText`; PostgreSQL parses it. */
  readonly payloadText: string
  /** 1 for a bare message, 2 for the oslo.messaging v2 envelope. */
  readonly envelopeVersion: 1 | 2
}

export interface DecodeOptions {
  /** Bodies longer than this many bytes are rejected before any parsing. */
  readonly maxMessageBytes: number
}

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

const parseJson = (text: string): E.Either<string, unknown> => {
  try {
    return E.right(JSON.parse(text))
  } catch (e) {
    return E.left(e instanceof Error ? e.message : String(e))
  }
}

const optionalString = (msg: Record<string, unknown>, key: string): E.Either<Rejection, string | null> => {
  const v = msg[key]
  if (v === undefined || v === null) return E.right(null)
  if (typeof v === 'string') return E.right(v)
  return E.left(rejection('invalid-field', `"${key}" must be a string, got ${describe(v)}`))
}

const describe = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v)

export const decodeMessage = (body: Uint8Array, options: DecodeOptions): E.Either<Rejection, DecodedMessage> => {
  if (body.byteLength > options.maxMessageBytes) {
    return E.left(rejection('body-too-large', `body is ${body.byteLength} bytes, the limit is ${options.maxMessageBytes}`))
  }
  let text: string
  try {
    text = utf8.decode(body)
  } catch {
    return E.left(rejection('invalid-utf8', 'body is not valid UTF-8'))
  }
  const outer = parseJson(text)
  if (E.isLeft(outer)) return E.left(rejection('invalid-json', `body is not JSON: ${outer.left}`))
  if (!isPlainObject(outer.right)) {
    return E.left(rejection('invalid-envelope', `body must be a JSON object, got ${describe(outer.right)}`))
  }

  let message: Record<string, unknown>
  let messageText: string
  let envelopeVersion: 1 | 2
  if ('oslo.version' in outer.right || 'oslo.message' in outer.right) {
    const inner = outer.right['oslo.message']
    if (typeof inner !== 'string') {
      return E.left(rejection('invalid-envelope', `"oslo.message" must be a string of JSON, got ${describe(inner)}`))
    }
    const parsed = parseJson(inner)
    if (E.isLeft(parsed)) {
      return E.left(rejection('invalid-message-json', `"oslo.message" is not JSON: ${parsed.left}`))
    }
    if (!isPlainObject(parsed.right)) {
      return E.left(rejection('invalid-envelope', `"oslo.message" must hold a JSON object, got ${describe(parsed.right)}`))
    }
    message = parsed.right
    messageText = inner
    envelopeVersion = 2
  } else {
    message = outer.right
    messageText = text
    envelopeVersion = 1
  }

  const eventType = message['event_type']
  if (eventType === undefined || eventType === null) {
    return E.left(rejection('missing-event-type', 'message has no "event_type"'))
  }
  if (typeof eventType !== 'string' || eventType.length === 0) {
    return E.left(rejection('invalid-event-type', `"event_type" must be a non-empty string, got ${describe(eventType)}`))
  }

  const messageId = message['message_id']
  if (messageId === undefined || messageId === null) {
    return E.left(rejection('missing-message-id', 'message has no "message_id"'))
  }
  if (typeof messageId !== 'string' || !UUID.test(messageId)) {
    return E.left(rejection('invalid-message-id', `"message_id" must be a UUID, got ${typeof messageId === 'string' ? JSON.stringify(messageId.slice(0, 64)) : describe(messageId)}`))
  }

  const payload = message['payload']
  if (!isPlainObject(payload)) {
    return E.left(rejection('invalid-payload', `"payload" must be a JSON object, got ${describe(payload)}`))
  }

  const publisherId = optionalString(message, 'publisher_id')
  if (E.isLeft(publisherId)) return publisherId
  const priority = optionalString(message, 'priority')
  if (E.isLeft(priority)) return priority

  const collected = collectorTimestamp(message, payload)
  if (E.isLeft(collected)) return collected

  const unsupported = jsonbIncompatibility(messageText)
  if (unsupported !== undefined) return E.left(rejection('unsupported-json', unsupported))
  if (nestedDeeperThan(messageText, payload, MAX_PAYLOAD_DEPTH)) {
    return E.left(rejection('unsupported-json', `"payload" nests objects and arrays deeper than ${MAX_PAYLOAD_DEPTH} levels`))
  }

  const payloadText = memberText(messageText, 'payload')
  // Cannot happen for text JSON.parse accepted with an object payload; kept as a value, not a throw.
  if (payloadText === undefined) return E.left(rejection('invalid-payload', '"payload" text not found'))

  return E.right({
    messageId: messageId.toLowerCase(),
    eventType,
    publisherId: publisherId.right,
    priority: priority.right,
    collectorTimestamp: collected.right,
    messageText,
    payloadText,
    envelopeVersion,
  })
}

/** Design §4: the payload's `vitrage_sample_date` when present, else the envelope `timestamp`. */
const collectorTimestamp = (
  message: Record<string, unknown>,
  payload: Record<string, unknown>,
): E.Either<Rejection, string> => {
  const sample = payload['vitrage_sample_date']
  const [field, value] =
    sample !== undefined && sample !== null ? ['payload.vitrage_sample_date', sample] : ['timestamp', message['timestamp']]
  if (typeof value !== 'string') {
    return E.left(rejection('invalid-timestamp', `"${field}" must be a timestamp string, got ${describe(value)}`))
  }
  const parsed = parseTimestamp(value)
  if (E.isLeft(parsed)) return E.left(rejection('invalid-timestamp', `"${field}": ${parsed.left}`))
  return E.right(parsed.right.iso)
}

/**
 * The deepest nesting of objects and arrays a payload may have. Vitrage's are a few levels deep;
 * a payload nested thousands deep was stored (jsonb takes ~10,000) and then overflowed the stack of
 * every reader that walks it (canonical JSON, snapshots, history output): `graph` exited 70 and
 * `follow --snapshot-every` at every start, for good, since the log keeps it.
 */
export const MAX_PAYLOAD_DEPTH = 512

/**
 * Whether `value` nests deeper than `limit` (iterative: no stack to overflow). `text` holds it:
 * shorter than 2 × `limit`, or with fewer than `limit` opening brackets, it cannot, which is all
 * a normal message costs.
 */
const nestedDeeperThan = (text: string, value: unknown, limit: number): boolean => {
  // Each level takes two characters at least ('[' and ']').
  if (text.length < 2 * limit) return false
  let brackets = 0
  for (const open of ['{', '[']) {
    for (let i = text.indexOf(open); i !== -1 && brackets < limit; i = text.indexOf(open, i + 1)) brackets++
  }
  if (brackets < limit) return false
  const stack: Array<readonly [unknown, number]> = [[value, 1]]
  while (stack.length > 0) {
    const [v, depth] = stack.pop() as readonly [unknown, number]
    if (depth > limit) return true
    for (const child of Array.isArray(v) ? v : Object.values(v as object)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1])
    }
  }
  return false
}
