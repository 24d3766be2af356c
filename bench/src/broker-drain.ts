/**
 * The ceiling for one queue (design §10): consume and ack, nothing else. Prefetch 1000, ack every
 * 100 with allUpTo. Prints {"count", "ms"} from the first delivery to the last ack.
 * Usage: broker-drain.ts <amqp-url> <queue> <count>
 */
import amqp from 'amqplib'

const [url, queue, countText] = process.argv.slice(2) as [string, string, string]
const count = Number(countText)
const connection = await amqp.connect(url)
const channel = await connection.createChannel()
await channel.prefetch(1000)
let received = 0
let started = 0
const done = new Promise<number>((resolve) => {
  void channel.consume(queue, (m) => {
    if (m === null) return
    if (received === 0) started = performance.now()
    received++
    if (received % 100 === 0 || received === count) channel.ack(m, true)
    if (received === count) resolve(performance.now())
  })
})
const ended = await done
process.stdout.write(`${JSON.stringify({ count: received, ms: ended - started })}\n`)
await connection.close()
