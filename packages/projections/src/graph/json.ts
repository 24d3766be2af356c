/**
 * JSON values as the graph stores them, and the text form of the canonical graph (design §5).
 *
 * The canonical text is what Python's `json.dumps(value, sort_keys=True, indent=1)` writes (the
 * generator of test/fixtures/*.graph.json), so `diff` against Vitrage-side output works byte for
 * byte: keys sorted by code point at every depth, `ensure_ascii` escaping (every character
 * outside U+0020..U+007E as `\uXXXX`, lower-case hex, astral characters as surrogate pairs),
 * item separator `,` and key separator `: `. The compact form uses `,` and `:` with no
 * whitespace. Numbers print as Python prints the same JSON number after `json.loads`: integers
 * as digits (also beyond 1e21), non-integers as `repr(float)` (`1e-05`, not `0.00001`). The
 * differences that cannot be avoided with Node 20's JSON.parse (no access to a number's source
 * text): JavaScript does not keep `1.0` apart from `1`, so a float with an integral value prints
 * as `1` where Python prints `1.0`; an integer beyond 2^53 (which Python keeps exact) comes back
 * rounded to the nearest double; a number beyond double range (jsonb takes `1e400`) is Infinity,
 * as in Python, but no snapshot can carry it (snapshot-codec.ts). Vitrage's own values are
 * strings, booleans and small numbers, so none of these has been seen in its traffic.
 */

export type Json = null | boolean | number | string | readonly Json[] | { readonly [key: string]: Json }

/** A property map: own enumerable keys only (a `__proto__` key is an ordinary own key). */
export type Properties = Record<string, Json>

/**
 * Order of strings by Unicode code point, as Python compares `str` (JavaScript's `<` compares
 * UTF-16 code units, which differs when a surrogate pair meets a character in U+E000..U+FFFF).
 */
export const compareCodePoints = (a: string, b: string): number => {
  if (a === b) return 0
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i)
    let y = b.charCodeAt(i)
    if (x !== y) {
      if (x >= 0xd800 && y >= 0xd800) {
        x = x >= 0xe000 ? x - 0x800 : x + 0x2000
        y = y >= 0xe000 ? y - 0x800 : y + 0x2000
      }
      return x - y
    }
  }
  return a.length - b.length
}

/** Sets an own data property; unlike `o[k] = v` it also works for the key `__proto__`. */
export const setOwn = (o: Properties, key: string, value: Json): void => {
  if (key === '__proto__') Object.defineProperty(o, key, { value, writable: true, enumerable: true, configurable: true })
  else o[key] = value
}

/** Vitrage ids and labels: non-empty strings. */
export const isNonEmptyString = (v: unknown): v is string => typeof v === 'string' && v.length > 0

export const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

/** Structural equality of JSON values (object key order does not matter). */
export const jsonEqual = (a: Json | undefined, b: Json | undefined): boolean => {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i] as Json, b[i] as Json)) return false
    return true
  }
  if (Array.isArray(b)) return false
  const ao = a as Readonly<Properties>
  const bo = b as Readonly<Properties>
  const keys = Object.keys(ao)
  if (keys.length !== Object.keys(bo).length) return false
  for (const k of keys) if (!Object.hasOwn(bo, k) || !jsonEqual(ao[k], bo[k])) return false
  return true
}

const NON_ASCII = /[^\x20-\x7e]/
const NON_ASCII_G = /[\u007f-\uffff]/g
const hex4 = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`

/** A JSON string literal with Python's `ensure_ascii` escaping. */
export const pyString = (s: string): string => {
  const lit = JSON.stringify(s)
  // JSON.stringify already escapes controls and lone surrogates exactly as Python does.
  return NON_ASCII.test(s) ? lit.replace(NON_ASCII_G, hex4) : lit
}

/** A JSON number as Python's json module prints the value `json.loads` made of it. */
export const pyNumber = (n: number): string => {
  if (!Number.isFinite(n)) return Number.isNaN(n) ? 'NaN' : n > 0 ? 'Infinity' : '-Infinity'
  if (Number.isInteger(n)) return Math.abs(n) < 1e21 ? String(n === 0 ? 0 : n) : BigInt(n).toString()
  if (Math.abs(n) >= 1e-4) return String(n)
  // repr(float) switches to exponent form below 1e-4 and pads the exponent to two digits.
  const [mantissa, exponent] = n.toExponential().split('e') as [string, string]
  const sign = exponent[0] === '-' ? '-' : '+'
  const digits = exponent.replace(/^[-+]/, '')
  return `${mantissa}e${sign}${digits.padStart(2, '0')}`
}

/**
 * Python-compatible JSON text of `value` with sorted keys. `indent` undefined means compact
 * (`,` and `:`); a number means one line per item indented by that many spaces per level.
 *
 * Fast path: JSON.stringify with a replacer array holding every key in the value, sorted by
 * code point (it then writes every object's keys in that order, integer-like keys included),
 * and one pass of `ensure_ascii` escaping over the result (characters from U+007F up only occur
 * inside string literals). About ten times faster than writing piece by piece, which matters
 * for snapshots of large graphs. Values it would print differently from Python (a `__proto__`
 * key, whose inherited value JSON.stringify would pick up on objects that lack it; numbers that
 * JavaScript formats differently) take the reference writer, pyJsonWrite.
 */
export const pyJson = (value: Json, indent?: number): string => {
  const keys = new Set<string>()
  if (!collectKeys(value, keys)) return pyJsonWrite(value, indent)
  const text = JSON.stringify(value, [...keys].sort(compareCodePoints), indent)
  return needsEscape(text) ? text.replace(NON_ASCII_G, hex4) : text
}

/** Any character from U+007F up? (Ten times faster than a regular expression on long text.) */
const needsEscape = (text: string): boolean => Buffer.byteLength(text, 'utf8') !== text.length || text.includes('\u007f')

/** Adds every object key in `v` to `keys`; false when the fast path would print `v` wrongly. */
const collectKeys = (v: Json, keys: Set<string>): boolean => {
  if (typeof v !== 'object') {
    return typeof v !== 'number' || (Number.isInteger(v) ? Math.abs(v) < 1e21 : Number.isFinite(v) && Math.abs(v) >= 1e-4)
  }
  if (v === null) return true
  if (Array.isArray(v)) {
    for (const x of v as readonly Json[]) if (!collectKeys(x, keys)) return false
    return true
  }
  const o = v as Readonly<Properties>
  for (const k in o) {
    if (k === '__proto__') return false
    keys.add(k)
    const x = o[k] as Json
    // Strings and booleans need no visit.
    if ((typeof x === 'object' || typeof x === 'number') && !collectKeys(x, keys)) return false
  }
  return true
}

/** The reference writer: pyJson's result, built piece by piece (slower, no special cases). */
export const pyJsonWrite = (value: Json, indent?: number): string =>
  write(value, indent === undefined ? undefined : ' '.repeat(indent), '\n')

const write = (v: Json, step: string | undefined, nl: string): string => {
  switch (typeof v) {
    case 'string':
      return pyString(v)
    case 'number':
      return pyNumber(v)
    case 'boolean':
      return v ? 'true' : 'false'
    default:
      break
  }
  if (v === null) return 'null'
  const inner = step === undefined ? '' : nl + step
  const sep = step === undefined ? ',' : `,${inner}`
  const colon = step === undefined ? ':' : ': '
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]'
    let out = `[${inner}`
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out += sep
      out += write(v[i] as Json, step, inner)
    }
    return `${out}${step === undefined ? '' : nl}]`
  }
  const o = v as Readonly<Properties>
  const keys = Object.keys(o)
  if (keys.length === 0) return '{}'
  keys.sort(compareCodePoints)
  let out = `{${inner}`
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string
    if (i > 0) out += sep
    out += pyString(k) + colon + write(o[k] as Json, step, inner)
  }
  return `${out}${step === undefined ? '' : nl}}`
}
