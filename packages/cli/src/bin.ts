/**
 * Process entry point. Exits with main's code; if a resource was left open the process would
 * linger, so after a grace period it exits anyway (and says so).
 */
import { holdStopSignals } from './signals.js'

// Before the rest of the program is loaded: a SIGTERM during loading is held for the command
// (see signals.ts), not the default exit by signal.
holdStopSignals()
// A defect's text goes out scrubbed as the logs are: a driver's error may quote a URL or an
// option with its password (the URLs are in the environment and the arguments).
const { makeScrubber, secretsOfArguments } = await import('@vitrage-persistor/core')
const scrub = makeScrubber(secretsOfArguments([...Object.values(process.env), ...process.argv]))
const internalError = (e: unknown): string => `vitrage-persistor: internal error: ${scrub(e instanceof Error ? (e.stack ?? e.message) : String(e))}\n`
// A throw from an event handler (a library's: pg-copy-streams threw one from a socket's 'drain',
// review 43) is a defect like any other: said as one, exit 70, not Node's default exit 1.
process.on('uncaughtException', (e: unknown) => {
  process.stderr.write(internalError(e))
  process.exit(70)
})
const { main } = await import('./main.js')

main(process.argv, process.env).then(
  (code) => {
    process.exitCode = code
    setTimeout(() => {
      process.stderr.write('vitrage-persistor: handles still open 5 s after the command ended; exiting\n')
      process.exit(code)
    }, 5_000).unref()
  },
  (e: unknown) => {
    process.stderr.write(internalError(e))
    process.exit(70)
  },
)
