/**
 * Rows in PostgreSQL's COPY text format: tab-separated, newline-terminated, `\N` for NULL,
 * backslash, newline, carriage return and tab escaped. Pure, so it is tested without a server.
 */
const NEEDS_ESCAPE = /[\\\n\r\t]/
const ESCAPES = /[\\\n\r\t]/g
const REPLACEMENT: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' }

export const copyField = (value: string | number | null): string => {
  if (value === null) return '\\N'
  const s = typeof value === 'number' ? String(value) : value
  return NEEDS_ESCAPE.test(s) ? s.replace(ESCAPES, (c) => REPLACEMENT[c] as string) : s
}

export const copyRow = (fields: ReadonlyArray<string | number | null>): string => `${fields.map(copyField).join('\t')}\n`
