/** Small pieces every broker client of this package uses the same way. */
import type amqp from 'amqplib'

export const isAmqpUrl = (url: string): boolean => {
  try {
    return ['amqp:', 'amqps:'].includes(new URL(url).protocol)
  } catch {
    return false
  }
}

/**
 * The publish options of a message published again (a dead letter, a requeued copy): its own
 * properties, persistent, and `mandatory`, so that a copy no queue takes comes back as a return
 * instead of being dropped. Headers are the caller's.
 */
export const republishOptions = (p: amqp.MessageProperties, headers: Record<string, unknown>): amqp.Options.Publish => ({
  mandatory: true,
  contentType: p.contentType,
  contentEncoding: p.contentEncoding,
  deliveryMode: 2,
  priority: p.priority,
  correlationId: p.correlationId,
  messageId: p.messageId,
  timestamp: p.timestamp,
  type: p.type,
  appId: p.appId,
  headers,
})
