/**
 * A bzip2 decoder, for bodies kombu compressed with `bzip2` (oslo.messaging's kombu_compression;
 * kombu writes the header `application/x-bz2`). Node has no bzip2, and the pure-JavaScript
 * decoders on npm allocate a block's 3.6 MB work area for every body (717 bodies/s measured here
 * for 1 KB bodies, with a deprecation warning on each process): one area is reused here, as
 * bodies are decoded one at a time, synchronously.
 *
 * The format (bzip2 1.0, as Python's bz2 writes it): a stream is `BZh` and a level 1-9 (blocks of
 * up to level x 100,000 bytes), then blocks, each a 48-bit magic, its CRC, the pointer of the
 * Burrows-Wheeler transform, the symbols in use, Huffman tables selected every 50 symbols,
 * move-to-front indices with run lengths of the front symbol in bijective base 2 (RUNA, RUNB),
 * ending in an end-of-block symbol; then the end-of-stream magic and the combined CRC. Undoing it:
 * Huffman, move-to-front, the inverse transform, then the initial run-length coding (four equal
 * bytes and a count of more). Streams may follow each other (as Python's bz2.decompress reads
 * them); anything else after the last one is an error (Python drops some such bytes), and so is
 * an empty body: stricter than Python, never looser (review 65's differential fuzzing).
 *
 * Every read is bounded: the output by `maxBytes` (the decoder stops as it would pass it), a
 * block by its level's size, every table index checked, so that a corrupt or hostile body is an
 * error (Bzip2Error) and never a hang, a throw of another kind or an allocation it chose.
 */

export class Bzip2Error extends Error {
  override name = 'Bzip2Error'
}

/** The output would pass `maxBytes`. */
export class Bzip2TooLarge extends Bzip2Error {
  override name = 'Bzip2TooLarge'
}

const MAX_CODE_LENGTH = 20
const GROUP_SIZE = 50
const MAX_GROUPS = 6
const MAX_ALPHABET = 258
// bzip2 1.0.8 reads up to 2^15 - 1 selectors and uses the first 18,002 (its table size).
const MAX_SELECTORS = 18_002

const CRC_TABLE = (() => {
  const table = new Uint32Array(256)
  for (let i = 0; i < 256; i++) {
    let c = i << 24
    for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1
    table[i] = c >>> 0
  }
  return table
})()

/** Bits, most significant first. */
class BitReader {
  private byte = 0
  private acc = 0
  private count = 0
  constructor(private readonly data: Uint8Array) {}

  /** The next `n` bits (n <= 24). */
  bits(n: number): number {
    while (this.count < n) {
      if (this.byte >= this.data.length) throw new Bzip2Error('bzip2: unexpected end of data')
      this.acc = (this.acc << 8) | (this.data[this.byte++] as number)
      this.count += 8
    }
    this.count -= n
    return (this.acc >>> this.count) & ((1 << n) - 1)
  }

  bit(): number {
    return this.bits(1)
  }

  /** Whole bytes not read yet (after alignToByte: every byte not read). */
  get bytesLeft(): number {
    return this.data.length - this.byte + Math.floor(this.count / 8)
  }

  /** Positions the reader at the next whole byte. */
  alignToByte(): void {
    this.count -= this.count % 8
  }
}

interface HuffmanTable {
  minLen: number
  readonly limit: Int32Array
  readonly base: Int32Array
  readonly perm: Uint16Array
}

/**
 * The canonical decoding tables of one group's code lengths (bzip2's hbCreateDecodeTables),
 * written into `table`'s arrays.
 */
const fillHuffmanTable = (table: HuffmanTable, lengths: Uint8Array, alphaSize: number): void => {
  let minLen = 32
  let maxLen = 0
  for (let i = 0; i < alphaSize; i++) {
    const l = lengths[i] as number
    if (l > maxLen) maxLen = l
    if (l < minLen) minLen = l
  }
  const { perm, base, limit } = table
  let pp = 0
  for (let l = minLen; l <= maxLen; l++) for (let s = 0; s < alphaSize; s++) if (lengths[s] === l) perm[pp++] = s
  base.fill(0)
  for (let s = 0; s < alphaSize; s++) {
    const next = (lengths[s] as number) + 1
    base[next] = (base[next] as number) + 1
  }
  for (let i = 1; i < base.length; i++) base[i] = (base[i] as number) + (base[i - 1] as number)
  limit.fill(-1)
  let vec = 0
  for (let l = minLen; l <= maxLen; l++) {
    vec += (base[l + 1] as number) - (base[l] as number)
    limit[l] = vec - 1
    vec <<= 1
  }
  for (let l = minLen + 1; l <= maxLen; l++) base[l] = (((limit[l - 1] as number) + 1) << 1) - (base[l] as number)
  table.minLen = minLen
}

/** Output bytes, bounded: never more than maxBytes, and exactly maxBytes fit. */
class Output {
  buffer: Uint8Array
  length = 0
  constructor(
    initial: number,
    private readonly maxBytes: number,
  ) {
    this.buffer = new Uint8Array(Math.min(Math.max(64, initial), maxBytes))
  }

  /** Room for `n` more bytes, or Bzip2TooLarge when they would pass maxBytes. */
  reserve(n: number): void {
    const needed = this.length + n
    if (needed > this.maxBytes) throw new Bzip2TooLarge(`bzip2: decompressed body is over the limit of ${this.maxBytes} bytes`)
    if (needed <= this.buffer.length) return
    const grown = new Uint8Array(Math.min(this.maxBytes, Math.max(needed, this.buffer.length * 2)))
    grown.set(this.buffer.subarray(0, this.length))
    this.buffer = grown
  }
}

// Work areas, reused (decoding is synchronous, one body at a time): the inverse transform's (4
// bytes a byte of block, grown to the largest level seen) and the small per-block tables. A
// block of one byte allocated a dozen arrays, so bodies of many tiny blocks decoded ten times
// slower than libbzip2 (review 65: 420 ms against 42 for 40,000 blocks in 1 MiB; 89 ms reused).
let work = new Uint32Array(0)
const inUse = new Uint8Array(256)
const selectors = new Uint8Array(MAX_SELECTORS)
const groupOrder = new Uint8Array(MAX_GROUPS)
const lengths = new Uint8Array(MAX_ALPHABET)
const tables: HuffmanTable[] = Array.from({ length: MAX_GROUPS }, () => ({
  minLen: 0,
  limit: new Int32Array(MAX_CODE_LENGTH + 1),
  base: new Int32Array(MAX_CODE_LENGTH + 2),
  perm: new Uint16Array(MAX_ALPHABET),
}))
const counts = new Int32Array(256)
const mtf = new Uint8Array(256)
const starts = new Int32Array(256)

/** Decodes one block (after its magic) into `out`; returns its CRC as computed. */
const decodeBlock = (r: BitReader, blockSize: number, out: Output): number => {
  const storedCrc = ((r.bits(16) << 16) | r.bits(16)) >>> 0
  if (r.bit() !== 0) throw new Bzip2Error('bzip2: randomised blocks (bzip2 0.9.0) are not supported')
  const origPtr = r.bits(24)

  // The bytes in use, in order: symbols index this list.
  let nInUse = 0
  const ranges = r.bits(16)
  for (let i = 0; i < 16; i++) {
    if ((ranges & (0x8000 >>> i)) === 0) continue
    const bits = r.bits(16)
    for (let j = 0; j < 16; j++) if ((bits & (0x8000 >>> j)) !== 0) inUse[nInUse++] = i * 16 + j
  }
  if (nInUse === 0) throw new Bzip2Error('bzip2: a block uses no byte')
  const alphaSize = nInUse + 2
  const endOfBlock = nInUse + 1

  const nGroups = r.bits(3)
  if (nGroups < 2 || nGroups > MAX_GROUPS) throw new Bzip2Error(`bzip2: ${nGroups} Huffman groups`)
  const nSelectors = r.bits(15)
  if (nSelectors < 1) throw new Bzip2Error('bzip2: no selectors')
  const usedSelectors = Math.min(nSelectors, MAX_SELECTORS)
  for (let g = 0; g < MAX_GROUPS; g++) groupOrder[g] = g
  for (let i = 0; i < nSelectors; i++) {
    let j = 0
    while (r.bit() === 1) if (++j >= nGroups) throw new Bzip2Error('bzip2: selector out of range')
    // Move-to-front of the group numbers.
    const g = groupOrder[j] as number
    groupOrder.copyWithin(1, 0, j)
    groupOrder[0] = g
    if (i < MAX_SELECTORS) selectors[i] = g
  }

  for (let g = 0; g < nGroups; g++) {
    let len = r.bits(5)
    for (let s = 0; s < alphaSize; s++) {
      for (;;) {
        if (len < 1 || len > MAX_CODE_LENGTH) throw new Bzip2Error('bzip2: code length out of range')
        if (r.bit() === 0) break
        len += r.bit() === 0 ? 1 : -1
      }
      lengths[s] = len
    }
    fillHuffmanTable(tables[g] as HuffmanTable, lengths, alphaSize)
  }

  // Symbols to bytes: move-to-front, and runs of the front byte.
  if (work.length < blockSize) work = new Uint32Array(blockSize)
  const tt = work
  counts.fill(0)
  for (let i = 0; i < 256; i++) mtf[i] = i
  let n = 0
  let selector = 0
  let left = 0
  let table = tables[0] as HuffmanTable
  let runLength = 0
  let runWeight = 0
  for (;;) {
    if (left === 0) {
      if (selector >= usedSelectors) throw new Bzip2Error('bzip2: more symbols than selectors')
      table = tables[selectors[selector++] as number] as HuffmanTable
      left = GROUP_SIZE
    }
    left--
    let codeLength = table.minLen
    let code = r.bits(codeLength)
    while (code > (table.limit[codeLength] as number)) {
      if (++codeLength > MAX_CODE_LENGTH) throw new Bzip2Error('bzip2: invalid Huffman code')
      code = (code << 1) | r.bit()
    }
    const index = code - (table.base[codeLength] as number)
    if (index < 0 || index >= alphaSize) throw new Bzip2Error('bzip2: invalid Huffman code')
    const symbol = table.perm[index] as number
    if (symbol <= 1) {
      // RUNA adds the weight, RUNB twice it; the weight doubles each symbol.
      if (runWeight === 0) {
        runWeight = 1
        runLength = 0
      }
      runLength += runWeight << symbol
      runWeight <<= 1
      if (runLength > blockSize) throw new Bzip2Error('bzip2: run longer than the block')
      continue
    }
    if (runWeight !== 0) {
      runWeight = 0
      if (n + runLength > blockSize) throw new Bzip2Error('bzip2: block longer than its level allows')
      const b = inUse[mtf[0] as number] as number
      counts[b] = (counts[b] as number) + runLength
      tt.fill(b, n, n + runLength)
      n += runLength
    }
    if (symbol === endOfBlock) break
    if (n >= blockSize) throw new Bzip2Error('bzip2: block longer than its level allows')
    const position = symbol - 1
    const front = mtf[position] as number
    mtf.copyWithin(1, 0, position)
    mtf[0] = front
    const b = inUse[front] as number
    counts[b] = (counts[b] as number) + 1
    tt[n++] = b
  }
  if (origPtr >= n) throw new Bzip2Error('bzip2: transform pointer out of the block')

  // The inverse Burrows-Wheeler transform: each entry's upper 24 bits link to the next byte.
  for (let i = 0, sum = 0; i < 256; i++) {
    starts[i] = sum
    sum += counts[i] as number
  }
  for (let i = 0; i < n; i++) {
    const b = (tt[i] as number) & 0xff
    const at = starts[b] as number
    starts[b] = at + 1
    tt[at] = (tt[at] as number) | (i << 8)
  }

  // The initial run-length coding: after four equal bytes, a count of more of them.
  let crc = 0xffffffff
  let p = (tt[origPtr] as number) >>> 8
  let last = -1
  let same = 0
  for (let k = 0; k < n; k++) {
    const entry = tt[p] as number
    const b = entry & 0xff
    p = entry >>> 8
    if (same === 4) {
      same = 0
      if (b === 0) continue
      out.reserve(b)
      for (let j = 0; j < b; j++) crc = (crc << 8) ^ (CRC_TABLE[((crc >>> 24) ^ last) & 0xff] as number)
      out.buffer.fill(last, out.length, out.length + b)
      out.length += b
      continue
    }
    if (b === last) same++
    else {
      last = b
      same = 1
    }
    // Grown as written, so a body of exactly maxBytes fits (review 65: a block's entries, which
    // count four equal bytes and their count as five, were reserved at once: 20% too many).
    if (out.length === out.buffer.length) out.reserve(1)
    out.buffer[out.length++] = b
    crc = (crc << 8) ^ (CRC_TABLE[((crc >>> 24) ^ b) & 0xff] as number)
  }
  // Four equal bytes promise a count after them: libbzip2 refuses a block that ends there.
  if (same === 4) throw new Bzip2Error('bzip2: a run of four bytes without its count at the end of a block')
  const computed = ~crc >>> 0
  if (computed !== storedCrc) throw new Bzip2Error('bzip2: block checksum mismatch')
  return computed
}

/**
 * The bytes `data` (one or more bzip2 streams) decompress to (pure); Bzip2TooLarge as soon as they
 * would pass `maxBytes`, Bzip2Error for anything that is not bzip2 as bzip2 1.0 writes it.
 */
export const bunzip2 = (data: Uint8Array, maxBytes: number): Uint8Array => {
  const r = new BitReader(data)
  const out = new Output(data.length * 4, maxBytes)
  let streams = 0
  for (;;) {
    if (r.bits(8) !== 0x42 || r.bits(8) !== 0x5a || r.bits(8) !== 0x68) {
      throw new Bzip2Error(streams === 0 ? 'bzip2: not bzip2 data (no BZh header)' : 'bzip2: data after the end of the stream')
    }
    const level = r.bits(8) - 0x30
    if (level < 1 || level > 9) throw new Bzip2Error('bzip2: block size level out of range')
    let combined = 0
    for (;;) {
      const hi = r.bits(24)
      const lo = r.bits(24)
      if (hi === 0x314159 && lo === 0x265359) {
        const blockCrc = decodeBlock(r, level * 100_000, out)
        combined = (((combined << 1) | (combined >>> 31)) ^ blockCrc) >>> 0
      } else if (hi === 0x177245 && lo === 0x385090) {
        const stored = ((r.bits(16) << 16) | r.bits(16)) >>> 0
        if (stored !== combined) throw new Bzip2Error('bzip2: stream checksum mismatch')
        break
      } else throw new Bzip2Error('bzip2: bad block magic')
    }
    streams++
    r.alignToByte()
    if (r.bytesLeft === 0) break
  }
  return out.buffer.subarray(0, out.length)
}
