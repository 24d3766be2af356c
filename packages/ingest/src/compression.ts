/**
 * Bodies compressed by the publisher. oslo.messaging's `[oslo_messaging_rabbit] kombu_compression`
 * makes kombu compress each body and name the method in the header `compression` (a MIME type:
 * kombu resolves its aliases before it writes the header, and resolves them again when it reads
 * one, so both are accepted here). Vitrage's own consumers (kombu) decompress before decoding;
 * the persistor does the same, bounded: a body that inflates past the size limit stops there.
 *
 * kombu's `gzip`/`zlib` is the zlib format (RFC 1950), not gzip's file format; both are read.
 * `bzip2` (the other method oslo's help names, as `bz2`, which kombu does not know by that name)
 * is read by bzip2.ts. lzma/xz and zstd have no decoder here: such a body is dead-lettered intact,
 * with its header (a requeue brings it back the same: it has to be decompressed outside).
 */
import { constants } from 'node:buffer'
import zlib from 'node:zlib'
import { type Rejection, rejection } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import { Bzip2TooLarge, bunzip2 } from './bzip2.js'

type Method = 'zlib' | 'brotli' | 'bzip2'

const METHODS: Readonly<Record<string, Method>> = {
  'application/x-gzip': 'zlib',
  gzip: 'zlib',
  zlib: 'zlib',
  'application/x-brotli': 'brotli',
  brotli: 'brotli',
  'application/x-bz2': 'bzip2',
  bzip2: 'bzip2',
  bzip: 'bzip2',
}

/** What a `compression` header may name for the persistor to read the body. */
export const SUPPORTED_COMPRESSION = ['application/x-gzip', 'application/x-bz2', 'application/x-brotli'] as const

/**
 * The body as the publisher wrote it before compressing (pure). No `compression` header: the body
 * itself. `maxBytes` bounds both the compressed and the decompressed size.
 */
export const decompressBody = (body: Buffer, compression: unknown, maxBytes: number): E.Either<Rejection, Buffer> => {
  // kombu reads any false value as no compression: '', b'', 0, false.
  if (!compression || (Buffer.isBuffer(compression) && compression.byteLength === 0)) return E.right(body)
  if (typeof compression !== 'string') return E.left(rejection('unsupported-compression', `header "compression" must be a string, got ${Buffer.isBuffer(compression) ? 'bytes' : typeof compression}`))
  const method = METHODS[compression]
  if (method === undefined) {
    return E.left(rejection('unsupported-compression', `compression "${compression.slice(0, 100)}" is not one the persistor reads (${SUPPORTED_COMPRESSION.join(', ')}); set the publisher's kombu_compression to gzip or bzip2, or unset it`))
  }
  if (body.byteLength > maxBytes) {
    return E.left(rejection('body-too-large', `compressed body is ${body.byteLength} bytes, the limit is ${maxBytes}`))
  }
  // maxOutputLength cannot exceed what a Buffer may hold (an unbounded caller: that is the bound).
  const maxOutputLength = Math.min(maxBytes, constants.MAX_LENGTH)
  try {
    if (method === 'bzip2') {
      const out = bunzip2(body, maxOutputLength)
      return E.right(Buffer.from(out.buffer, out.byteOffset, out.byteLength))
    }
    return E.right(method === 'zlib' ? zlib.unzipSync(body, { maxOutputLength }) : zlib.brotliDecompressSync(body, { maxOutputLength }))
  } catch (e) {
    if ((e as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE' || e instanceof Bzip2TooLarge) {
      return E.left(rejection('body-too-large', `body decompressed (${compression}) is over the limit of ${maxBytes} bytes`))
    }
    return E.left(rejection('invalid-compression', `body is not ${compression} data: ${(e as Error).message}`))
  }
}
