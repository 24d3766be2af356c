/**
 * Finds the exact text of one member of a JSON object, without parsing it.
 *
 * The persistor stores the notification payload as jsonb and lets PostgreSQL parse it from the
 * original text (numbers such as 1e400 stay exact, which JSON.parse + JSON.stringify would not
 * keep). It therefore needs the payload's own text out of the message text. The input has
 * already been accepted by JSON.parse, so this scanner only tracks strings and nesting. Like
 * JSON.parse and jsonb, it takes the last occurrence of a duplicated key.
 */

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const COMMA = 0x2c

const isSpace = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09

/**
 * Index just past the string starting at `start` (which is a quote). Jumps from quote to quote
 * (indexOf is native; most of a message's text is inside strings): a quote ends the string
 * unless an odd number of backslashes precedes it.
 */
const skipString = (text: string, start: number): number => {
  let i = start + 1
  for (;;) {
    const quote = text.indexOf('"', i)
    let b = quote - 1
    while (text.charCodeAt(b) === BACKSLASH) b--
    if ((quote - 1 - b) % 2 === 0) return quote + 1
    i = quote + 1
  }
}

/** Index just past the value starting at `start` (no leading whitespace). */
const skipValue = (text: string, start: number): number => {
  const c = text.charCodeAt(start)
  if (c === QUOTE) return skipString(text, start)
  if (c !== OPEN_BRACE && c !== OPEN_BRACKET) {
    // number, true, false, null: runs to the next delimiter
    let i = start
    for (;;) {
      const d = text.charCodeAt(i)
      if (Number.isNaN(d) || d === COMMA || d === CLOSE_BRACE || d === CLOSE_BRACKET || isSpace(d)) return i
      i++
    }
  }
  let depth = 0
  let i = start
  for (;;) {
    const d = text.charCodeAt(i)
    if (d === QUOTE) {
      i = skipString(text, i)
      continue
    }
    if (d === OPEN_BRACE || d === OPEN_BRACKET) depth++
    else if (d === CLOSE_BRACE || d === CLOSE_BRACKET) {
      depth--
      if (depth === 0) return i + 1
    }
    i++
  }
}

/**
 * The text of member `key` of the top-level object in `text`, or undefined when the top level
 * is not an object or has no such member. `text` must be valid JSON.
 */
export const memberText = (text: string, key: string): string | undefined => {
  let i = 0
  while (isSpace(text.charCodeAt(i))) i++
  if (text.charCodeAt(i) !== OPEN_BRACE) return undefined
  i++
  let found: string | undefined
  for (;;) {
    while (isSpace(text.charCodeAt(i)) || text.charCodeAt(i) === COMMA) i++
    if (text.charCodeAt(i) !== QUOTE) return found // the closing brace
    const keyEnd = skipString(text, i)
    const rawKey = text.slice(i + 1, keyEnd - 1)
    const name = rawKey.includes('\\') ? (JSON.parse(text.slice(i, keyEnd)) as string) : rawKey
    i = keyEnd
    while (isSpace(text.charCodeAt(i))) i++
    i++ // the colon
    while (isSpace(text.charCodeAt(i))) i++
    const valueEnd = skipValue(text, i)
    if (name === key) found = text.slice(i, valueEnd)
    i = valueEnd
  }
}

