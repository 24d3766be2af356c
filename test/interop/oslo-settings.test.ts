/**
 * The real oslo.messaging Notifier with the [oslo_messaging_rabbit] settings that change what
 * reaches the broker (compression, auto-delete, quorum queue limits); oslo-interop.test.ts has the
 * defaults, durability and the compatibility queue. Two files, so neither outlasts tap's timeout
 * when CI runs them beside everything else (each oslo publisher is a Python process).
 */
import { eventually } from '@vitrage-persistor/testing'
import t from 'tap'
import { cliJson } from '../support/cli.js'
import { osloPublish, osloUnavailable } from '../support/oslo.js'
import { sentAndStored, storedIds } from '../support/oslo-checks.js'
import { isConsuming, startPersistor } from '../support/persistor-process.js'
import { setupWorld } from '../support/setup.js'

const skip = osloUnavailable()


t.test('oslo with kombu_compression: gzip, bzip2 and brotli bodies are stored as if uncompressed; xz (no decoder here) is dead-lettered unsupported-compression, named in dead-letters list, and nothing is lost', { skip }, async (t) => {
  const world = await setupWorld(t)
  const { exchange, topic } = world.names
  const p = startPersistor(world.flags())
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  const payload = { vitrage_sample_date: '2026-12-01 10:00:00.123456', text: 'é'.repeat(500), n: 12345678901234567890 }
  const gzip = await osloPublish({ exchange, topic, count: 2, compression: 'gzip', payload })
  const bzip2 = await osloPublish({ exchange, topic, count: 2, compression: 'bzip2', payload })
  const brotli = await osloPublish({ exchange, topic, count: 2, compression: 'brotli', payload })
  const plain = await osloPublish({ exchange, topic, count: 1, payload })
  const xz = await osloPublish({ exchange, topic, count: 1, compression: 'xz', payload })
  // Compressed and refused for what it holds: dead-letters list still names it.
  const badPayload = await osloPublish({ exchange, topic, count: 1, compression: 'bzip2', payload: ['not', 'an', 'object'] })
  for (const r of [gzip, bzip2, brotli, plain, xz, badPayload]) t.equal(r.code, 0, r.stderr)
  const expected = [...gzip.sends, ...bzip2.sends, ...brotli.sends, ...plain.sends].map((s) => s.message_id as string)
  await eventually('stored and dead-lettered', async () => (await storedIds(world)).length === 7 && (await world.broker.depth(world.names.deadQueue)) === 2)
  t.same(await storedIds(world), expected, 'in order')
  const { rows } = await world.sql.query<{ same: boolean }>(`SELECT bool_and(payload = (SELECT payload FROM event ORDER BY id DESC LIMIT 1)) AS same FROM event`)
  t.equal(rows[0]?.same, true, 'each payload equals the uncompressed one')
  const listing = await cliJson<{ letters: Record<string, unknown>[] }>(['dead-letters', 'list', '--amqp-url', world.broker.url, '--exchange', exchange, '--topic', topic, '--queue', world.names.queue])
  t.match(listing.letters, [
    { reason: 'unsupported-compression', messageId: null, detail: /application\/x-lzma/ },
    { reason: 'invalid-payload', messageId: badPayload.sends[0]?.message_id },
  ])
  const [dead] = await world.broker.drain(world.names.deadQueue)
  t.equal(dead?.properties.headers?.['compression'], 'application/x-lzma', 'the letter keeps its header and its body')
  t.same([...(dead?.content.subarray(0, 6) ?? [])], [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], 'xz data')
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

for (const compat of [false, true]) {
  t.test(`the persistor first${compat ? ' in compatibility mode' : ''}, in a deployment with amqp_auto_delete: it declares oslo's ${compat ? 'exchange and queue' : 'exchange'} auto-delete, as oslo does, and oslo publishes into ${compat ? 'them' : 'it'}`, { skip }, async (t) => {
    const world = await setupWorld(t)
    const { exchange, topic } = world.names
    const p = startPersistor(world.flags(['--amqp-auto-delete', ...(compat ? ['--compat-queue'] : [])]))
    t.teardown(() => p.kill('SIGKILL'))
    const consuming = await p.waitFor(isConsuming, 'consuming')
    t.ok((consuming['declared'] as string[]).includes(`exchange ${exchange}`), "the persistor declared oslo's exchange")
    if (compat) t.match(p.output(), /oslo's queue is auto-delete/, 'warned: a stop deletes the queue with what it holds')
    // Before --amqp-auto-delete: PRECONDITION_FAILED - inequivalent arg 'auto_delete', and oslo dropped the notification.
    const sent = await osloPublish({ exchange, topic, count: 3, rabbit: { amqp_auto_delete: 'true' } })
    await sentAndStored(t, world, sent)
    p.kill('SIGTERM')
    t.equal((await p.exited).code, 0)
  })
}

t.test("compatibility mode first, with rabbit_quorum_queue and its three limits: oslo's queue declared with oslo's arguments, and oslo publishes into it", { skip }, async (t) => {
  const world = await setupWorld(t)
  const { exchange, topic } = world.names
  const p = startPersistor(world.flags(['--compat-queue', '--amqp-quorum-queues', '--amqp-quorum-delivery-limit', '5', '--amqp-quorum-max-memory-length', '1000', '--amqp-quorum-max-memory-bytes', '1048576']))
  t.teardown(() => p.kill('SIGKILL'))
  const consuming = await p.waitFor(isConsuming, 'consuming')
  t.ok((consuming['declared'] as string[]).includes(`queue ${topic}.info`), "the persistor declared oslo's queue")
  t.match(p.output(), /drops a message delivered more often than its delivery limit/, 'warned: the limit drops messages')
  // Before: PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' (and the memory limits), and oslo dropped the notification.
  const sent = await osloPublish({ exchange, topic, count: 3, quorum: true, rabbit: { rabbit_quorum_delivery_limit: '5', rabbit_quroum_max_memory_length: '1000', rabbit_quroum_max_memory_bytes: '1048576' } })
  await sentAndStored(t, world, sent)
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})
