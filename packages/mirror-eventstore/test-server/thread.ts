/**
 * The test server on its own thread, for measurements: in the same thread as the client, the
 * server's protobuf decoding and the client's encoding take turns on one core, so a rate measured
 * there is the rate of one core doing both. A real EventStoreDB runs in its own process; a worker
 * thread gets the server its own core the same way. Tests that inspect stored events or inject
 * faults use TestEventStore directly.
 *
 * Protocol (worker messages): the worker posts `{ready, connectionString}` once listening; the
 * parent posts `{streamLength, name, reply}` and `{close}`; the worker answers on `reply` and exits
 * after close.
 */
import { isMainThread, MessageChannel, parentPort, Worker, workerData, type MessagePort } from 'node:worker_threads'
import { once } from 'node:events'
import { TestEventStore, type TestEventStoreOptions } from './server.js'

type Ask = { kind: 'streamLength'; name: string } | { kind: 'close' }
type Request = Ask & { reply: MessagePort }

export class ThreadedTestEventStore {
  #closing: Promise<void> | undefined

  private constructor(
    private readonly worker: Worker,
    readonly connectionString: string,
  ) {}

  /** Starts a TestEventStore on a worker thread (run with tsx: this file is TypeScript). */
  static async start(options: TestEventStoreOptions = {}): Promise<ThreadedTestEventStore> {
    // Node 20 does not apply the parent's --import loaders (tsx) to a worker, so the entry is a
    // short script that registers tsx in the thread, then imports this file.
    const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'))
    const entry = `import(${tsx}).then((m) => m.register()).then(() => import(${JSON.stringify(import.meta.url)}))`
    const worker = new Worker(entry, { eval: true, workerData: options })
    const [message] = (await Promise.race([once(worker, 'message'), once(worker, 'error').then(([e]) => Promise.reject(e))])) as [
      { connectionString: string },
    ]
    return new ThreadedTestEventStore(worker, message.connectionString)
  }

  private ask<T>(request: Ask): Promise<T> {
    const { port1, port2 } = new MessageChannel()
    const answered = once(port1, 'message').then(([value]) => value as T)
    this.worker.postMessage({ ...request, reply: port2 }, [port2])
    return answered.finally(() => port1.close())
  }

  /** Number of events in a stream (0 when it does not exist). */
  streamLength(name: string): Promise<number> {
    return this.ask({ kind: 'streamLength', name })
  }

  /** Idempotent: closes the server, then the thread. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const exited = once(this.worker, 'exit')
      await this.ask({ kind: 'close' })
      await exited
    })()
    return this.#closing
  }
}

if (!isMainThread && parentPort !== null) {
  const port = parentPort
  const server = await TestEventStore.start(workerData as TestEventStoreOptions)
  port.on('message', (request: Request) => {
    if (request.kind === 'streamLength') {
      request.reply.postMessage(server.streams().get(request.name)?.length ?? 0)
    } else {
      void server.close().then(() => {
        request.reply.postMessage(true)
        port.close()
      })
    }
  })
  port.postMessage({ connectionString: server.connectionString })
}
