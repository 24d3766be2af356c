/** Broker administration through rabbitmqctl (for fault tests on the shared node). */
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
