/** `pnpm bench <name> [options]` */
import { BenchUsageError } from './common.js'
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
try {
  await bench(args)
} catch (e) {
  if (!(e instanceof BenchUsageError)) throw e
  process.stderr.write(`pnpm bench ${name}: ${e.message}\n`)
  process.exit(2)
}
