/**
 * The logging interface packages accept (pino's, narrowed). Packages never create loggers or
 * choose destinations; the program that composes them does.
 */
export interface LogFn {
  (obj: Record<string, unknown>, msg?: string): void
  (msg: string): void
}

export interface Logger {
  readonly debug: LogFn
  readonly info: LogFn
  readonly warn: LogFn
  readonly error: LogFn
  readonly child: (bindings: Record<string, unknown>) => Logger
}

const noop = (): void => {}

/** A logger that discards everything (library defaults, tests). */
export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop, child: () => silentLogger }
