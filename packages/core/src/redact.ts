/**
 * Secrets never reach logs, errors or metrics. Connection strings are shown with the password
 * replaced, and any text produced by a driver is scrubbed of the passwords the program knows.
 */

/** `amqp://user:secret@host/` -> `amqp://user:***@host/`; text that is not a URL is returned unchanged. */
export const redactUrl = (url: string): string => {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    // `password` in the query string (libpq style) is a secret too.
    for (const key of [...u.searchParams.keys()]) {
      if (/pass(word)?|secret|token/i.test(key)) u.searchParams.set(key, '***')
    }
    return u.toString()
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@')
  }
}

/** The passwords embedded in connection strings (decoded and raw), for scrubbing. */
export const secretsOf = (urls: ReadonlyArray<string | undefined>): string[] => {
  const out = new Set<string>()
  for (const url of urls) {
    if (url === undefined) continue
    try {
      const u = new URL(url)
      if (u.password !== '') {
        out.add(u.password)
        out.add(decodeURIComponent(u.password))
      }
      for (const [key, value] of u.searchParams) {
        if (/pass(word)?|secret|token/i.test(key) && value !== '') out.add(value)
      }
    } catch {
      const m = /\/\/[^:/@]*:([^@/]*)@/.exec(url)
      if (m?.[1]) out.add(m[1])
    }
  }
  // Very short "secrets" would scrub ordinary words; a one-letter password is not protected by hiding it.
  return [...out].filter((s) => s.length >= 3)
}

/** Returns a function replacing every occurrence of each secret with `***`. */
export const makeScrubber = (secrets: readonly string[]): ((text: string) => string) => {
  if (secrets.length === 0) return (text) => text
  // A secret inside a JSON log line appears JSON-escaped; scrub that form too. Longest first,
  // so a secret that contains another is replaced whole.
  const forms = [...new Set(secrets.flatMap((s) => [s, JSON.stringify(s).slice(1, -1)]))].sort((a, b) => b.length - a.length)
  const escaped = forms.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
  const pattern = new RegExp(escaped.join('|'), 'g')
  return (text) => text.replace(pattern, '***')
}
