import { readFileSync } from 'node:fs'
import * as E from 'fp-ts/lib/Either.js'
import { EventTypes, type StoredEvent } from '@vitrage-persistor/core'
import t from 'tap'
import { canonicalJson, fromCanonical, toCanonical } from './canonical.js'
import { evolve, replayGraph } from './evolve.js'
import { EntityGraph } from './model.js'
import { summarize } from './summary.js'

const fixture = (name: string): URL => new URL(`../../../../test/fixtures/${name}`, import.meta.url)
const readJson = (name: string): unknown => JSON.parse(readFileSync(fixture(name), 'utf8'))

/** Every captured message as the store would hand it to a reader: ids 1..400 in publish order. */
const events: StoredEvent[] = readFileSync(fixture('vitrage-seed7-400.raw.jsonl'), 'utf8')
  .trim()
  .split('\n')
  .map((line, i) => {
    const body = JSON.parse((JSON.parse(line) as { body: string }).body) as Record<string, string>
    const msg = JSON.parse(body['oslo.message'] as string) as Record<string, unknown>
    const ts = `${(msg['timestamp'] as string).replace(' ', 'T')}Z`
    return {
      id: i + 1,
      messageId: msg['message_id'] as string,
      eventType: msg['event_type'] as string,
      publisherId: msg['publisher_id'] as string,
      priority: msg['priority'] as string,
      collectorTimestamp: ts,
      persistedAt: ts,
      payload: msg['payload'] as Record<string, unknown>,
    }
  })
const graphChanges = events.filter((e) => e.eventType === EventTypes.graphChange)

t.test('the fixture holds 400 messages, 300 of them graph changes', async (t) => {
  t.equal(events.length, 400)
  t.equal(graphChanges.length, 300)
})

t.test('replaying all 300 graph changes gives the graph Vitrage built', async (t) => {
  const g = replayGraph(graphChanges)
  t.same(toCanonical(g), readJson('vitrage-seed7-400.graph.json'))
  t.equal(g.anomalyCount, 0)
})

t.test('after the first 150 graph changes: the point-in-time graph', async (t) => {
  const g = replayGraph(graphChanges.slice(0, 150))
  t.same(toCanonical(g), readJson('vitrage-seed7-400.graph-after-150-changes.json'))
})

t.test('the interleaved alarm-history events change nothing', async (t) => {
  let g = new EntityGraph()
  for (const e of events) g = evolve(g, e)
  t.same(toCanonical(g), readJson('vitrage-seed7-400.graph.json'))
})

t.test('the pretty canonical text is byte-identical to the reference files', async (t) => {
  t.equal(canonicalJson(replayGraph(graphChanges)), readFileSync(fixture('vitrage-seed7-400.graph.json'), 'utf8'))
  t.equal(
    canonicalJson(replayGraph(graphChanges.slice(0, 150))),
    readFileSync(fixture('vitrage-seed7-400.graph-after-150-changes.json'), 'utf8'),
  )
})

t.test('snapshot round trip: compact text, then replaying the rest equals a full replay', async (t) => {
  const first = replayGraph(graphChanges.slice(0, 150))
  const snapshot = canonicalJson(first, 'compact')
  t.notMatch(snapshot, /\s(?=(?:[^"]*"[^"]*")*[^"]*$)/, 'no whitespace outside strings')
  const loaded = fromCanonical(snapshot)
  if (E.isLeft(loaded)) return void t.fail(loaded.left)
  t.equal(canonicalJson(loaded.right, 'compact'), snapshot)
  const resumed = replayGraph(graphChanges.slice(150), loaded.right)
  t.equal(canonicalJson(resumed), readFileSync(fixture('vitrage-seed7-400.graph.json'), 'utf8'))
})

t.test("the summary of the replayed fixture graph counts the reference graph's vertices and edges, by type, category and label, and those without a type", async (t) => {
  const expected = readJson('vitrage-seed7-400.graph.json') as {
    vertices: { properties: Record<string, unknown> }[]
    edges: { label: string }[]
  }
  const count = (xs: (string | undefined)[]): Record<string, number> => {
    const out: Record<string, number> = {}
    for (const x of xs) if (x !== undefined) out[x] = (out[x] ?? 0) + 1
    return out
  }
  const s = summarize(replayGraph(graphChanges))
  t.equal(s.vertices, expected.vertices.length)
  t.equal(s.edges, expected.edges.length)
  t.same(s.verticesByType, count(expected.vertices.map((v) => v.properties['vitrage_type'] as string | undefined)))
  t.same(s.verticesByCategory, count(expected.vertices.map((v) => v.properties['vitrage_category'] as string | undefined)))
  t.same(s.edgesByLabel, count(expected.edges.map((e) => e.label)))
  t.equal(s.verticesWithoutType, expected.vertices.filter((v) => v.properties['vitrage_type'] === undefined).length)
})
