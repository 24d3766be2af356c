/**
 * Checking an EventStoreDB connection string before anything starts, with the client's own
 * parser. The client reports some problems only as console warnings that quote the whole string,
 * password included (an unknown option key, which it then ignores); here they are captured: an
 * unknown key is refused like a parse error, and the other warnings are returned, first line only
 * (the line that quotes the string is dropped), for the caller's scrubbed log.
 */
import { EventStoreDBClient } from '@eventstore/db-client'
import { parseConnectionString } from '@eventstore/db-client/dist/Client/parseConnectionString.js'
import * as E from 'fp-ts/lib/Either.js'

const firstLine = (text: string): string => text.split('\n', 1)[0] as string

/**
 * Runs `fn` (which may parse a connection string: the client's constructor does) with the
 * client's console warnings diverted to `onWarning`, first line only: the rest quotes the
 * string, password included.
 */
export const divertingClientWarnings = <T>(fn: () => T, onWarning: (line: string) => void): T => {
  const original = console.warn
  console.warn = (...args: unknown[]) => {
    onWarning(firstLine(args.map(String).join(' ')))
  }
  try {
    return fn()
  } finally {
    console.warn = original
  }
}

/** `url` without the options that name files (tlsCAFile, userCertFile, userKeyFile). */
const withoutFiles = (url: string): string => {
  // The options start at the first `?` after the userinfo (a password may hold a `?`).
  const at = url.indexOf('?', url.indexOf('@') + 1)
  if (at < 0) return url
  const kept = url
    .slice(at + 1)
    .split('&')
    .filter((option) => !/^(tlsCAFile|userCertFile|userKeyFile)=/i.test(option))
  return kept.length === 0 ? url.slice(0, at) : `${url.slice(0, at)}?${kept.join('&')}`
}

export const checkConnectionString = (url: string): E.Either<string, readonly string[]> => {
  const warnings: string[] = []
  try {
    const parsed = divertingClientWarnings(() => parseConnectionString(url), (w) => warnings.push(w))
    if (Boolean(parsed.userCertFile) !== Boolean(parsed.userKeyFile)) return E.left('userCertFile must be given with accompanying userKeyFile')
    // The client's constructor checks more than the parser (keepAliveInterval=-5 passed the
    // parser, then failed the mirror's start, exit 1 where a usage error is 2): it connects
    // nothing until used, and is disposed at once. Without the files it would read: those are
    // read when the mirror starts, whose failure is exit 1 and restarted, as a certificate not
    // mounted yet at boot should be (exit 2 is not restarted: review 66).
    void divertingClientWarnings(() => EventStoreDBClient.connectionString(withoutFiles(url)), () => {}).dispose()
  } catch (e) {
    return E.left(firstLine(e instanceof Error ? e.message : String(e)))
  }
  const unknown = warnings.filter((w) => w.startsWith('Unknown option key'))
  if (unknown.length > 0) return E.left(unknown.map((w) => w.replace(', setting will be ignored.', '')).join('; '))
  return E.right(warnings)
}
