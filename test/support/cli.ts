/** The CLI in-process (its main), for commands that return and print. */
import { main } from '@vitrage-persistor/cli'

export const cli = async (args: readonly string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> => {
  let out = ''
  let err = ''
  const code = await main(['node', 'vitrage-persistor', ...args], { LOG_LEVEL: 'warn', ...env }, {
    out: (s) => void (out += s),
    err: (s) => void (err += s),
    isTTY: false,
  })
  return { code, out, err }
}

/** Runs a CLI command expected to print JSON and succeed. */
export const cliJson = async <T = unknown>(args: readonly string[]): Promise<T> => {
  const r = await cli([...args, '--format', 'json'])
  if (r.code !== 0) throw new Error(`vitrage-persistor ${args.join(' ')} exited ${r.code}: ${r.err}`)
  return JSON.parse(r.out) as T
}
