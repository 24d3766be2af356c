/**
 * Progress of long runs (replay, graph over a large history, republish) on standard error: a
 * bar with rate and ETA on a terminal, redrawn at most ten times a second; otherwise a plain
 * line every five seconds, for logs.
 */
import type { Io } from './command.js'

export interface Progress {
  /** `done` of `total` units so far (total may grow); `note` follows the figures (where to resume, say). */
  readonly update: (done: number, total: number, note?: string) => void
  readonly finish: () => void
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US')

const duration = (seconds: number): string =>
  !Number.isFinite(seconds) ? '?' : seconds < 60 ? `${Math.ceil(seconds)}s` : seconds < 3600 ? `${Math.floor(seconds / 60)}m${String(Math.ceil(seconds % 60)).padStart(2, '0')}s` : `${(seconds / 3600).toFixed(1)}h`

/** The status text (pure, for tests). */
export const progressLine = (label: string, done: number, total: number, elapsedMs: number, width = 30, note?: string): { bar: string; plain: string } => {
  const fraction = total > 0 ? Math.min(1, done / total) : 1
  const rate = elapsedMs > 0 ? (done / elapsedMs) * 1000 : 0
  const eta = rate > 0 ? (total - done) / rate : Number.POSITIVE_INFINITY
  const filled = Math.round(fraction * width)
  const stats = `${(fraction * 100).toFixed(1)}% ${fmt(done)}/${fmt(total)} ${fmt(rate)}/s ETA ${duration(eta)}${note ? `; ${note}` : ''}`
  return { bar: `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${stats}`, plain: `${label}: ${stats}` }
}

export const startProgress = (io: Io, label: string, now: () => number = () => Date.now()): Progress => {
  const started = now()
  // The first line comes one interval in: a run that ends sooner prints at most its last line.
  let last = started
  let shown = false
  let finished = false
  let latest: { done: number; total: number; note?: string } = { done: 0, total: 0 }
  const draw = (force: boolean): void => {
    const t = now()
    const every = io.errIsTTY ? 100 : 5_000
    if ((!force && t - last < every) || latest.total === 0) return
    last = t
    const line = progressLine(label, latest.done, latest.total, t - started, 30, latest.note)
    if (io.errIsTTY) io.err(`\r${line.bar}\x1b[K`)
    else io.err(`${line.plain}\n`)
    shown = true
  }
  return {
    update: (done, total, note) => {
      latest = note === undefined ? { done, total } : { done, total, note }
      draw(false)
    },
    // Idempotent; a run that had nothing to do (total 0) ends without a line.
    finish: () => {
      if (finished) return
      finished = true
      if (shown || now() - started > 1_000) draw(true)
      if (io.errIsTTY && shown) io.err('\n')
    },
  }
}
