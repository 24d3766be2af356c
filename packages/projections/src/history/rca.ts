/**
 * Root-cause analysis over the alarm history: breadth-first over `causes` edges from an alarm,
 * forwards (what it caused) and backwards (what caused it), as Vitrage's history RCA does, with
 * an optional depth, either over all history (Vitrage's behaviour) or only over the edges and
 * alarms active at a time T.
 *
 * The answer is Vitrage's node-link shape (networkx `node_link_data`): nodes are alarms (with
 * `id`), links carry `source`/`target` as node indexes and `key` as the label, and
 * `inspected_index` is the index of the alarm asked about. Each node is visited once (Vitrage's
 * walk can expand a node twice; the result is the same graph).
 */
import { type AlarmRecord, type CausalEdge, type Failure, type HistoryReader, requireNonNegativeInts } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'

export interface RcaOptions {
  /** Levels to walk in each direction (unlimited when absent). */
  readonly depth?: number
  /** Only edges and alarms active at this time. */
  readonly at?: string
}

export interface RcaLink extends CausalEdge {
  readonly source: number
  readonly target: number
  readonly key: string
}

export interface RcaGraph {
  readonly directed: true
  readonly multigraph: true
  readonly graph: Record<string, never>
  readonly nodes: ReadonlyArray<AlarmRecord & { readonly id: string }>
  readonly links: readonly RcaLink[]
  readonly inspected_index: number
}

const walk = async (
  reader: HistoryReader,
  root: string,
  direction: 'forward' | 'backward',
  options: RcaOptions,
): Promise<E.Either<Failure, { ids: string[]; edges: CausalEdge[] }>> => {
  const visited = new Set<string>([root])
  const ids: string[] = []
  const edges: CausalEdge[] = []
  let level = [root]
  for (let depth = 0; level.length > 0 && (options.depth === undefined || depth < options.depth); depth++) {
    const found = await reader.causalEdges(level, direction, options.at)()
    if (E.isLeft(found)) return found
    const next: string[] = []
    for (const e of found.right) {
      edges.push(e)
      const other = direction === 'forward' ? e.target_id : e.source_id
      if (!visited.has(other)) {
        visited.add(other)
        next.push(other)
        ids.push(other)
      }
    }
    level = next
  }
  return E.right({ ids, edges })
}

/**
 * The causal graph around `alarmId` (BFS over `causes` edges both ways), in Vitrage's RCA form.
 * An alarm the history does not hold (or not active at `at`) gives, as Vitrage's own `get_rca`
 * does, an empty graph with `inspected_index` 0: check `nodes.length` (the CLI says so, exit 1).
 */
export const rca = async (reader: HistoryReader, alarmId: string, options: RcaOptions = {}): Promise<E.Either<Failure, RcaGraph>> => {
  // -1, NaN or 1.5 walked one level, or none, and answered as if the history had no more.
  requireNonNegativeInts('rca', { depth: options.depth })
  const forward = await walk(reader, alarmId, 'forward', options)
  if (E.isLeft(forward)) return forward
  const backward = await walk(reader, alarmId, 'backward', options)
  if (E.isLeft(backward)) return backward
  const wanted = [...new Set([alarmId, ...backward.right.ids, ...forward.right.ids])]
  const alarms = await reader.alarmsById(wanted, options.at)()
  if (E.isLeft(alarms)) return alarms
  const byId = new Map(alarms.right.map((a) => [a.vitrage_id, a]))
  // Node order: the alarm asked about, then causes (backwards), then effects (forwards).
  const nodes = wanted.flatMap((id) => {
    const a = byId.get(id)
    return a === undefined ? [] : [{ ...a, id }]
  })
  const index = new Map(nodes.map((n, i) => [n.vitrage_id, i]))
  const seen = new Set<string>()
  const links: RcaLink[] = []
  for (const e of [...backward.right.edges, ...forward.right.edges]) {
    const source = index.get(e.source_id)
    const target = index.get(e.target_id)
    const key = JSON.stringify([e.source_id, e.target_id, e.label, e.start_timestamp])
    // An edge whose alarm is not in the answer (not active at T, or never activated) is left out.
    if (source === undefined || target === undefined || seen.has(key)) continue
    seen.add(key)
    links.push({ ...e, source, target, key: e.label })
  }
  return E.right(connectedTo(index.get(alarmId), nodes, links))
}

/**
 * The part of the answer connected to the alarm asked about. The walk goes through every alarm
 * an edge names, but an alarm left out (not active at T, or never activated) takes its links
 * with it, and the alarms found beyond it would stand unconnected: they go too.
 */
const connectedTo = (root: number | undefined, nodes: RcaGraph['nodes'], links: readonly RcaLink[]): RcaGraph => {
  const reached = new Set<number>(root === undefined ? [] : [root])
  for (let grew = true; grew; ) {
    grew = false
    for (const l of links) {
      if (reached.has(l.source) !== reached.has(l.target)) {
        reached.add(l.source)
        reached.add(l.target)
        grew = true
      }
    }
  }
  const renumber = new Map<number, number>()
  const kept = nodes.filter((_, i) => reached.has(i) && renumber.set(i, renumber.size) !== undefined)
  const keptLinks = links.flatMap((l) => (reached.has(l.source) ? [{ ...l, source: renumber.get(l.source) as number, target: renumber.get(l.target) as number }] : []))
  return { directed: true, multigraph: true, graph: {}, nodes: kept, links: keptLinks, inspected_index: root === undefined ? 0 : (renumber.get(root) as number) }
}
