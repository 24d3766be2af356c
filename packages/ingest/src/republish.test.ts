import t from 'tap'
import { priorityMismatch, routingKeyOf } from './republish.js'

t.test('--to-topic routes each event under <topic>.<its priority in lower case>, as oslo.messaging does', async (t) => {
  t.equal(routingKeyOf({ topic: 'vitrage_persistor' }, { priority: 'INFO' }), 'vitrage_persistor.info')
  t.equal(routingKeyOf({ topic: 'vitrage_persistor' }, { priority: 'ERROR' }), 'vitrage_persistor.error')
  t.equal(routingKeyOf({ topic: 't' }, { priority: null }), 't.info', 'no priority stored: info')
  t.equal(routingKeyOf({ routingKey: 'k.info' }, { priority: 'ERROR' }), 'k.info', 'one key for every event')
})

t.test('a routing key ending in another priority than the event\'s is a mismatch; one naming no priority is not', async (t) => {
  t.notOk(priorityMismatch('vitrage_persistor.info', { priority: 'INFO' }))
  t.ok(priorityMismatch('vitrage_persistor.info', { priority: 'ERROR' }))
  t.ok(priorityMismatch('vitrage_persistor.warn', { priority: null }))
  t.notOk(priorityMismatch('standby_queue', { priority: 'ERROR' }), 'a queue name through the default exchange')
  t.notOk(priorityMismatch('a.b.custom', { priority: 'ERROR' }))
})
