/** Broker administration through rabbitmqctl (for fault tests on the shared node). */
import { eventually } from '@vitrage-persistor/testing'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Erlang pids of the connections whose connection_name contains `needle`. */
export const connectionsNamed = async (needle: string, node?: string): Promise<string[]> => {
  const args = [...(node ? ['-n', node] : []), '-q', 'list_connections', 'pid', 'client_properties', '--no-table-headers']
  const { stdout } = await run('rabbitmqctl', args)
  return stdout
    .split('\n')
    .filter((l) => l.includes(needle))
    .map((l) => l.split('\t')[0] as string)
}

/** Force-closes those connections as an operator would; returns how many were closed. */
export const closeConnectionsNamed = async (needle: string, reason: string, node?: string): Promise<number> => {
  const pids = await connectionsNamed(needle, node)
  for (const pid of pids) await run('rabbitmqctl', [...(node ? ['-n', node] : []), '-q', 'close_connection', pid, reason])
  return pids.length
}

/**
 * The ready count of `queue` once none of its messages is unacked. Letters a closed channel held
 * unacked (basic.get registers no consumer) go back when the queue sees the channel's process end,
 * which can come after the channel's close-ok: a passive declare right after can still miss them.
 */
export const settledDepth = async (queue: string, vhost = '/'): Promise<number> => {
  const counts = async (): Promise<{ ready: number; unacked: number } | undefined> => {
    const { stdout } = await run('rabbitmqctl', ['-q', 'list_queues', '-p', vhost, 'name', 'messages_ready', 'messages_unacknowledged', '--no-table-headers'])
    const row = stdout
      .split('\n')
      .map((l) => l.split('\t'))
      .find((cells) => cells[0] === queue)
    return row === undefined ? undefined : { ready: Number(row[1]), unacked: Number(row[2]) }
  }
  const settled = await eventually(`no unacked message in ${queue}`, async () => {
    const c = await counts()
    return c !== undefined && c.unacked === 0 && c
  })
  return settled.ready
}
