/**
 * What a child process's JavaScript objects retain, measured through its inspector: a full
 * collection first, then the heap in use. Sampling heap-in-use from /metrics instead reads
 * wherever the collector happens to be in its cycle (the old generation may go tens of rounds
 * without a major collection), so a leak check built on it flakes under load.
 *
 * Start the child with `NODE_OPTIONS=--inspect=127.0.0.1:0` (INSPECTABLE below); it prints the
 * debugger's address on stderr, which `retainedBytes` finds in its output.
 */
import WebSocket from 'ws'

export const INSPECTABLE = { NODE_OPTIONS: '--inspect=127.0.0.1:0' } as const

const debuggerUrl = (output: string): string => {
  const m = /Debugger listening on (ws:\/\/\S+)/.exec(output)
  if (m?.[1] === undefined) throw new Error(`no inspector address in the child's output (started with INSPECTABLE?):\n${output.slice(-2000)}`)
  return m[1]
}

/** Bytes of JavaScript heap and of memory held by its objects (Buffers) in use after two full collections (the second frees what the first's finalisers released). */
export const retainedBytes = async (output: string): Promise<number> => {
  const ws = new WebSocket(debuggerUrl(output))
  try {
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
    })
    let next = 0
    const pending = new Map<number, { resolve: (r: unknown) => void; reject: (e: Error) => void }>()
    ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: { message: string } }
      if (m.id === undefined) return
      const p = pending.get(m.id)
      pending.delete(m.id)
      if (m.error !== undefined) p?.reject(new Error(m.error.message))
      else p?.resolve(m.result)
    })
    const call = (method: string, params: object = {}): Promise<unknown> =>
      new Promise((resolve, reject) => {
        const id = ++next
        pending.set(id, { resolve, reject })
        ws.send(JSON.stringify({ id, method, params }))
      })
    await call('HeapProfiler.collectGarbage')
    await call('HeapProfiler.collectGarbage')
    // Buffers (message bodies) live outside the JavaScript heap: count them too.
    const r = (await call('Runtime.evaluate', { expression: '(() => { const m = process.memoryUsage(); return m.heapUsed + m.external })()', returnByValue: true })) as {
      result: { value: number }
    }
    return r.result.value
  } finally {
    ws.close()
  }
}
