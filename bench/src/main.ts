/** `pnpm bench <name> [options]` */
import { benchIngest } from './ingest.js'

const benches: Record<string, (args: readonly string[]) => Promise<void>> = { ingest: benchIngest }

const [name, ...args] = process.argv.slice(2)
const bench = name === undefined ? undefined : benches[name]
if (bench === undefined) {
  process.stderr.write(`usage: pnpm bench <${Object.keys(benches).join('|')}> [options]\n`)
  process.exit(2)
}
await bench(args)
