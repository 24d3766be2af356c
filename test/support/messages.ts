/** Building notification bodies as oslo.messaging's messagingv2 driver does. */
import { randomUUID } from 'node:crypto'
import { encodeEnvelopeV2, encodeMessageText } from '@vitrage-persistor/core'

export const osloTimestamp = (d = new Date()): string => d.toISOString().replace('T', ' ').replace('Z', '000')

export const message = (payload: Record<string, unknown>, over: Record<string, unknown> = {}): Record<string, unknown> => ({
  message_id: randomUUID(),
  publisher_id: 'vitrage.test',
  event_type: 'vitrage.test.event',
  priority: 'INFO',
  payload,
  timestamp: osloTimestamp(),
  _unique_id: randomUUID().replaceAll('-', ''),
  ...over,
})

export const v2Body = (msg: Record<string, unknown> | string): Buffer =>
  Buffer.from(JSON.stringify({ 'oslo.version': '2.0', 'oslo.message': typeof msg === 'string' ? msg : JSON.stringify(msg) }))

/** A v2 body whose payload is given as JSON text (kept verbatim). */
export const v2BodyWithPayloadText = (payloadText: string, messageId = randomUUID(), eventType = 'vitrage.test.event'): Buffer =>
  Buffer.from(encodeEnvelopeV2(encodeMessageText({ messageId, eventType, publisherId: 'vitrage.test', priority: 'INFO', timestamp: osloTimestamp() }, payloadText)))

export const OSLO_PROPERTIES = { contentType: 'application/json', contentEncoding: 'utf-8', deliveryMode: 2 } as const
