/**
 * Encoding notifications the way oslo.messaging's `messagingv2` driver does, for replay to a
 * broker, interop tests and benchmarks. The payload is spliced in as JSON text so that a payload
 * read from jsonb (`payload::text`) is republished without a lossy JavaScript round trip.
 */
import { randomUUID } from 'node:crypto'

export interface NotificationFields {
  readonly messageId: string
  readonly eventType: string
  readonly publisherId: string | null
  readonly priority: string | null
  /** oslo form: naive UTC `YYYY-MM-DD HH:MM:SS[.ffffff]`. */
  readonly timestamp: string
}

/** The inner message JSON text, with `payloadText` inserted verbatim. */
export const encodeMessageText = (fields: NotificationFields, payloadText: string): string =>
  `{"message_id": ${JSON.stringify(fields.messageId)}, "publisher_id": ${JSON.stringify(fields.publisherId)}, ` +
  `"event_type": ${JSON.stringify(fields.eventType)}, "priority": ${JSON.stringify(fields.priority)}, ` +
  `"payload": ${payloadText}, "timestamp": ${JSON.stringify(fields.timestamp)}, ` +
  `"_unique_id": ${JSON.stringify(randomUUID().replaceAll('-', ''))}}`

/** The v2 envelope body around a message text. */
export const encodeEnvelopeV2 = (messageText: string): string =>
  `{"oslo.version": "2.0", "oslo.message": ${JSON.stringify(messageText)}}`

/** AMQP properties oslo.messaging sets on notifications (design §3). */
export const OSLO_PUBLISH_PROPERTIES = {
  contentType: 'application/json',
  contentEncoding: 'utf-8',
  deliveryMode: 2,
  // The captured messages (test/fixtures) carry priority 0.
  priority: 0,
} as const
