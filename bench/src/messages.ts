/**
 * Realistic traffic for benchmarks: the bodies captured from Vitrage's publisher
 * (test/fixtures), byte for byte, each copy with a fresh message_id (a UUID has a fixed length,
 * so sizes and shapes match production exactly: ~1.2 KB bodies).
 */
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'

const FIXTURE = new URL('../../test/fixtures/vitrage-seed7-400.raw.jsonl', import.meta.url)

interface Template {
  readonly body: string
  readonly messageId: string
}

export const templates = (): Template[] =>
  readFileSync(FIXTURE, 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const body = (JSON.parse(l) as { body: string }).body
      const inner = JSON.parse((JSON.parse(body) as Record<string, string>)['oslo.message'] as string) as { message_id: string }
      return { body, messageId: inner.message_id }
    })

export const makeBodies = (): ((i: number) => Buffer) => {
  const t = templates()
  return (i) => {
    const { body, messageId } = t[i % t.length] as Template
    return Buffer.from(body.replace(messageId, randomUUID()))
  }
}
