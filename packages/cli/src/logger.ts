/**
 * JSON logs (pino) on stdout. Every line passes through the scrubber before it is written, so
 * a password that slipped into a driver message, an error or a nested object is replaced by
 * `***` whatever logged it.
 */
import type { Logger } from '@vitrage-persistor/core'
import { pino } from 'pino'

/**
 * stdout closed under the process (a log shipper restarted, `| head`): an unhandled EPIPE
 * 'error' event would kill it. The lines are lost either way; the persistor goes on (its state
 * is in the broker and the database, not in its logs). Installed once.
 */
let stdoutGuarded = false
let stdoutGone = false
const guardStdout = (): void => {
  if (stdoutGuarded) return
  stdoutGuarded = true
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE' && e.code !== 'ERR_STREAM_DESTROYED') throw e
    stdoutGone = true
  })
}

export const createLogger = (level: string, scrub: (s: string) => string, write?: (line: string) => void): Logger => {
  if (write === undefined) guardStdout()
  const out =
    write ??
    ((l: string) => {
      if (!stdoutGone) process.stdout.write(l)
    })
  return pino(
    {
      level,
      base: { service: 'vitrage-persistor', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    { write: (line: string) => out(scrub(line)) },
  ) as unknown as Logger
}
