/** `pnpm bench <name> [options]` */
import { benchHistory } from './history.js'
import { benchIngest } from './ingest.js'
import { benchMirror } from './mirror.js'
import { benchReplay } from './replay.js'

const benches: Record<string, (args: readonly string[]) => Promise<void>> = { history: benchHistory, ingest: benchIngest, mirror: benchMirror, replay: benchReplay }

const [name, ...args] = process.argv.slice(2)
const bench = name === undefined ? undefined : benches[name]
if (bench === undefined) {
  process.stderr.write(`usage: pnpm bench <${Object.keys(benches).join('|')}> [options]\n`)
  process.exit(2)
}
await bench(args)
