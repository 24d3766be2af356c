/**
 * Secrets never reach logs, errors or metrics. Connection strings are shown with the password
 * replaced, and any text produced by a driver is scrubbed of the passwords the program knows.
 */

/**
 * The userinfo of a connection string read as its own client reads it, where `new URL` would not:
 * the user, then the password to the last `@` before `?` or `#` (EventStoreDB's client takes a raw
 * `/` as part of the password, and its host lists `h1,h2` are no WHATWG URL).
 */
const USERINFO_FALLBACK = /\/\/([^:/@?#]*):([^?#]*)@/
const ESDB = /^(esdb|kurrentdb)(\+discover)?:\/\//i

/** `amqp://user:secret@host/` -> `amqp://user:***@host/`; text that is not a URL is returned unchanged. */
export const redactUrl = (url: string): string => {
  try {
    if (ESDB.test(url)) throw new TypeError('read as its client reads it')
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    // `password` in the query string (libpq style) is a secret too.
    for (const key of [...u.searchParams.keys()]) {
      if (/pass(word)?|secret|token/i.test(key)) u.searchParams.set(key, '***')
    }
    return u.toString()
  } catch {
    return url.replace(USERINFO_FALLBACK, '//$1:***@')
  }
}

/** The passwords embedded in connection strings (decoded and raw), for scrubbing. */
export const secretsOf = (urls: ReadonlyArray<string | undefined>): string[] => {
  const out = new Set<string>()
  for (const url of urls) {
    if (url === undefined) continue
    try {
      if (ESDB.test(url)) throw new TypeError('read as its client reads it')
      const u = new URL(url)
      if (u.password !== '') {
        out.add(u.password)
        out.add(decodeURIComponent(u.password))
      }
      for (const [key, value] of u.searchParams) {
        if (/pass(word)?|secret|token/i.test(key) && value !== '') out.add(value)
      }
    } catch {
      const m = USERINFO_FALLBACK.exec(url)
      if (m?.[2]) {
        out.add(m[2])
        try {
          out.add(decodeURIComponent(m[2]))
        } catch {
          // Not percent-encoded text: the raw form is the secret.
        }
      }
    }
  }
  // A one- or two-letter password is not protected by hiding it, and would scrub ordinary text.
  return [...out].filter((s) => s.length >= 3)
}

/**
 * The passwords of the URLs in environment values and command-line arguments, a flag's included
 * (`--database-url=postgres://…`, a mistyped `--database_url=…` too), for scrubbing what is said
 * before or without a parsed configuration (usage errors, defects).
 */
export const secretsOfArguments = (values: ReadonlyArray<string | undefined>): string[] =>
  secretsOf(
    values.flatMap((v) => {
      const scheme = v?.indexOf('://') ?? -1
      if (v === undefined || scheme < 0) return []
      const equals = v.indexOf('=')
      return [equals >= 0 && equals < scheme ? v.slice(equals + 1) : v]
    }),
  )

/**
 * A secret this short is replaced only where it stands as a secret (`user:secret@`, `=secret`):
 * everywhere, a password such as `info` or `guest` would also replace JSON keys and level names
 * of the log lines it scrubs (`"level":"***"`).
 */
const BARE_SECRET_MIN = 6

/**
 * Any `scheme://user:password@` in driver text, known password or not. The password runs to the
 * last `@` before the host (a raw `@` or `/` in it, invalid in a URL but taken by EventStoreDB's
 * client and echoed by drivers, must not leave its tail behind), within the URL's text: no space,
 * quote, `?` or `#`.
 */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@"'<>?#]*):[^\s"'<>?#]+@/gi

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
