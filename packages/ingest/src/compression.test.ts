import zlib from 'node:zlib'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { decompressBody } from './compression.js'

const body = Buffer.from(JSON.stringify({ 'oslo.version': '2.0', 'oslo.message': '{"x": 1}' }))
// bz2.compress (Python's, as kombu calls it) of `body`, and of 256 MiB of zeros.
const BZ2_BODY = Buffer.from('QlpoOTFBWSZTWend/CsAABcbgFAFcBAABCKnmUogADFABiNNNGg1T1Hk1PU2kGj2qOyb9XelYxORMqAYrw16ukcUKuM2Nhs7doU/F3JFOFCQ6d38Kw==', 'base64')
const BZ2_BOMB = Buffer.from('QlpoOTFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kezuTbASo/wADABAAIIAAwzAUppqqoSRsAIkjxdyRThQkGsXyvAA==', 'base64')
const reasonOf = (r: E.Either<{ reason: string }, Buffer>): string => (E.isLeft(r) ? r.left.reason : 'decoded')

t.test('no compression header, or a false one (as kombu reads it): the body itself', async (t) => {
  for (const header of [undefined, null, '', Buffer.alloc(0), 0, false]) {
    const r = decompressBody(body, header, 1 << 20)
    t.ok(E.isRight(r) && r.right === body, String(header))
  }
})

t.test('kombu\'s gzip (the zlib format), its aliases, gzip\'s file format, bzip2 and brotli decompress to the body', async (t) => {
  for (const [header, data] of [
    ['application/x-gzip', zlib.deflateSync(body)],
    ['gzip', zlib.deflateSync(body)],
    ['zlib', zlib.deflateSync(body)],
    ['application/x-gzip', zlib.gzipSync(body)],
    ['application/x-brotli', zlib.brotliCompressSync(body)],
    ['brotli', zlib.brotliCompressSync(body)],
    ['application/x-bz2', BZ2_BODY],
    ['bzip2', BZ2_BODY],
    ['bzip', BZ2_BODY],
  ] as const) {
    const r = decompressBody(data, header, 1 << 20)
    t.ok(E.isRight(r) && r.right.equals(body), header)
  }
})

t.test('a method without a decoder, or a header that is not a string, is unsupported-compression, naming what is read', async (t) => {
  // Mixed case and bytes: kombu refuses them too.
  for (const header of ['application/x-lzma', 'xz', 'application/zstd', 'bz2', 'Application/X-Gzip', Buffer.from('gzip'), 7]) {
    const r = decompressBody(Buffer.from('BZh91AY&SY'), header, 1 << 20)
    t.equal(reasonOf(r), 'unsupported-compression', String(header))
  }
  const r = decompressBody(Buffer.from('x'), 'application/x-lzma', 1 << 20)
  t.match(E.isLeft(r) && r.left.detail, /application\/x-lzma.*application\/x-gzip, application\/x-bz2, application\/x-brotli.*kombu_compression to gzip or bzip2/)
})

t.test('data that is not what the header says is invalid-compression', async (t) => {
  t.equal(reasonOf(decompressBody(body, 'application/x-gzip', 1 << 20)), 'invalid-compression')
  t.equal(reasonOf(decompressBody(body, 'application/x-brotli', 1 << 20)), 'invalid-compression')
  t.equal(reasonOf(decompressBody(zlib.deflateSync(body).subarray(0, 10), 'application/x-gzip', 1 << 20)), 'invalid-compression', 'truncated')
  t.equal(reasonOf(decompressBody(body, 'application/x-bz2', 1 << 20)), 'invalid-compression')
  t.match(decompressBody(Buffer.from('BZh91AY&SY'), 'bzip2', 1 << 20), E.left({ reason: 'invalid-compression', detail: /not bzip2 data: bzip2: unexpected end of data/ }))
})

t.test('a body that inflates past the limit stops at the limit: body-too-large, nothing bigger allocated', async (t) => {
  // 256 MiB of zeros in a few kilobytes.
  const bomb = zlib.brotliCompressSync(Buffer.alloc(256 * 1024 * 1024), { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 5 } })
  t.ok(bomb.byteLength < 10_000)
  const before = process.memoryUsage().arrayBuffers
  const r = decompressBody(bomb, 'application/x-brotli', 1 << 20)
  t.equal(reasonOf(r), 'body-too-large')
  t.match(E.isLeft(r) && r.left.detail, /over the limit of 1048576 bytes/)
  t.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024 * 1024, 'did not inflate the whole bomb')
  const bz2Before = process.memoryUsage().arrayBuffers
  t.match(decompressBody(BZ2_BOMB, 'application/x-bz2', 1 << 20), E.left({ reason: 'body-too-large', detail: /over the limit of 1048576 bytes/ }), 'bzip2 too')
  t.ok(process.memoryUsage().arrayBuffers - bz2Before < 64 * 1024 * 1024, 'did not inflate the whole bzip2 bomb')
  t.equal(reasonOf(decompressBody(zlib.deflateSync(Buffer.alloc(2 << 20)), 'application/x-gzip', 1 << 20)), 'body-too-large')
  t.equal(reasonOf(decompressBody(zlib.deflateSync(Buffer.alloc(1 << 20)), 'application/x-gzip', 1 << 20)), 'decoded', 'exactly the limit')
  t.equal(reasonOf(decompressBody(Buffer.alloc(2 << 20), 'application/x-gzip', 1 << 20)), 'body-too-large', 'compressed body over the limit')
})
