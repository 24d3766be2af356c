/**
 * JSON text that JavaScript accepts but PostgreSQL's jsonb refuses.
 *
 * jsonb stores strings as UTF-8 text, so it rejects the escape `\u0000` and surrogate escapes
 * that do not form a pair (`\ud800` alone). A raw lone surrogate cannot be sent at all: Node
 * would encode it as U+FFFD and silently change the data. Both are found here, before a batch
 * reaches the database, so the message is dead-lettered with a precise reason instead of
 * failing its whole batch.
 */

/** Returns a description of the first construct jsonb would refuse, or undefined. */
export const jsonbIncompatibility = (text: string): string | undefined => {
  if (!text.isWellFormed()) return 'text contains a lone UTF-16 surrogate'
  // Fast path: without a `\u` escape there is nothing more to check.
  if (!text.includes('\\u')) return undefined
  const escape = /\\+u([0-9a-fA-F]{4})/g
  let pendingHigh = -1 // end index of a high-surrogate escape awaiting its low half
  for (let m = escape.exec(text); m !== null; m = escape.exec(text)) {
    const slashes = m[0].length - 5
    if (slashes % 2 === 0) continue // `\\u0000` is an escaped backslash followed by text
    const code = Number.parseInt(m[1] as string, 16)
    const isLow = code >= 0xdc00 && code <= 0xdfff
    if (pendingHigh >= 0) {
      if (isLow && m.index + slashes - 1 === pendingHigh) {
        pendingHigh = -1
        continue
      }
      return 'a \\uD800-\\uDBFF escape is not followed by a low surrogate escape'
    }
    if (code === 0) return 'the escape \\u0000 (jsonb cannot store NUL)'
    if (isLow) return 'a \\uDC00-\\uDFFF escape is not preceded by a high surrogate escape'
    if (code >= 0xd800 && code <= 0xdbff) pendingHigh = m.index + m[0].length
  }
  return pendingHigh >= 0 ? 'a \\uD800-\\uDBFF escape ends the text without its low surrogate' : undefined
}
