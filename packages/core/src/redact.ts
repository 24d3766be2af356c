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
  // A one- or two-letter password is not protected by hiding it, and would scrub ordinary text.
  return [...out].filter((s) => s.length >= 3)
}

/**
 * A secret this short is replaced only where it stands as a secret (`user:secret@`, `=secret`):
 * everywhere, a password such as `info` or `guest` would also replace JSON keys and level names
 * of the log lines it scrubs (`"level":"***"`).
 */
const BARE_SECRET_MIN = 6

/**
 * Any `scheme://user:password@` in driver text, known password or not. The password runs to the
 * last `@` before the host (a raw `@` in it, invalid in a URL but echoed by drivers, must not
 * leave its tail behind).
 */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@"'<>]*):[^\s/"'<>]+@/gi

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/**
 * Returns a function that replaces each secret with `***`: a secret of six characters or more
 * wherever it occurs, a shorter one in a URL's userinfo or as a parameter's value; and the
 * password of any URL with userinfo.
 */
export const makeScrubber = (secrets: readonly string[]): ((text: string) => string) => {
  // A secret inside a JSON log line appears JSON-escaped; scrub that form too. Longest first,
  // so a secret that contains another is replaced whole.
  const forms = [...new Set(secrets.flatMap((s) => [s, JSON.stringify(s).slice(1, -1)]))].sort((a, b) => b.length - a.length)
  const bare = forms.filter((f) => f.length >= BARE_SECRET_MIN).map(escapeRegExp)
  const short = forms.filter((f) => f.length < BARE_SECRET_MIN).map(escapeRegExp)
  const alternatives = [
    ...bare,
    ...(short.length > 0 ? [`(?<=:)(?:${short.join('|')})(?=@)`, `(?<==)(?:${short.join('|')})(?=$|[&;\\s"'#,)])`] : []),
  ]
  const pattern = alternatives.length > 0 ? new RegExp(alternatives.join('|'), 'g') : undefined
  return (text) => {
    const known = pattern === undefined ? text : text.replace(pattern, '***')
    return known.replace(URL_USERINFO, '$1:***@')
  }
}
