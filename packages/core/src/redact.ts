/**
 * Secrets never reach logs, errors or metrics. Connection strings are shown with the password
 * replaced, and any text produced by a driver is scrubbed of the passwords the program knows.
 */

/**
 * An EventStoreDB/KurrentDB connection string's userinfo as its client reads it: the password runs
 * to the first `@`, across any `/`, `?` or `#` (a base64 password has `/`), and host lists `h1,h2`
 * are no WHATWG URL, so `new URL` cannot be asked (review 62: logged whole; review 66: one with `?`).
 */
const ESDB_USERINFO = /^((?:esdb|kurrentdb)(?:\+discover)?:\/\/[^:@]*):([^@]*)@/i
/** The userinfo of another string `new URL` refuses. */
const USERINFO_FALLBACK = /\/\/([^:/@]*):([^@/]*)@/

/** `amqp://user:secret@host/` -> `amqp://user:***@host/`; text that is not a URL is returned unchanged. */
export const redactUrl = (url: string): string => {
  if (ESDB_USERINFO.test(url)) return url.replace(ESDB_USERINFO, '$1:***@')
  try {
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

/** `password` raw and, when it is percent-encoded text, decoded. */
const bothForms = (password: string): string[] => {
  try {
    return [password, decodeURIComponent(password)]
  } catch {
    return [password]
  }
}

/** The passwords embedded in connection strings (decoded and raw), for scrubbing. */
export const secretsOf = (urls: ReadonlyArray<string | undefined>): string[] => {
  const out = new Set<string>()
  for (const url of urls) {
    if (url === undefined) continue
    const esdb = ESDB_USERINFO.exec(url)
    if (esdb !== null) {
      for (const form of bothForms(esdb[2] ?? '')) out.add(form)
      continue
    }
    try {
      const u = new URL(url)
      if (u.password !== '') for (const form of bothForms(u.password)) out.add(form)
      for (const [key, value] of u.searchParams) {
        if (/pass(word)?|secret|token/i.test(key) && value !== '') out.add(value)
      }
    } catch {
      const m = USERINFO_FALLBACK.exec(url)
      if (m?.[2]) out.add(m[2])
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
 * last `@` before the host (a raw `@` in it, invalid in a URL but echoed by drivers, must not
 * leave its tail behind). An EventStoreDB string's runs to its first `@`, across `/`, `?` and `#`,
 * as its client reads it (ESDB_USERINFO); elsewhere a `/` ends it, so a port and a path followed
 * by an `@` (`http://host:9464/users/ops@example.com`) are left alone.
 */
const ESDB_URL_USERINFO = /\b((?:esdb|kurrentdb)(?:\+discover)?:\/\/[^\s:@"'<>]*):[^\s@"'<>]+@/gi
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
    return known.replace(ESDB_URL_USERINFO, '$1:***@').replace(URL_USERINFO, '$1:***@')
  }
}
