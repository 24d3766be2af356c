/**
 * JSON logs (pino) on stdout. Every line passes through the scrubber before it is written, so
 * a password that slipped into a driver message, an error or a nested object is replaced by
 * `***` whatever logged it.
 */
import type { Logger } from '@vitrage-persistor/core'
import { pino } from 'pino'

export const createLogger = (level: string, scrub: (s: string) => string, write: (line: string) => void = (l) => process.stdout.write(l)): Logger =>
  pino(
    {
      level,
      base: { service: 'vitrage-persistor', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    { write: (line: string) => write(scrub(line)) },
  ) as unknown as Logger
