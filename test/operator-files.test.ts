import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const root = fileURLToPath(new URL('..', import.meta.url))
const rulesPath = join(root, 'docs', 'prometheus-alerts.yml')

const sources = (dir: string): string[] =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return name === 'node_modules' || name === 'dist' ? [] : sources(path)
    return name.endsWith('.ts') && !name.endsWith('.test.ts') ? [path] : []
  })

/** Every metric the code registers (prom-client's `name:`), from the packages' sources. */
const registered = new Set(
  readdirSync(join(root, 'packages')).flatMap((p) => {
    const src = join(root, 'packages', p, 'src')
    try {
      statSync(src)
    } catch {
      return []
    }
    return sources(src).flatMap((f) => [...readFileSync(f, 'utf8').matchAll(/name: '(vitrage_persistor_[a-z_]+)'/g)].map((m) => m[1] as string))
  }),
)

/** A histogram's series carry suffixes; the registered name is the base. */
const known = (name: string): boolean => registered.has(name) || registered.has(name.replace(/_(bucket|sum|count)$/, ''))

t.test('every metric an alert or the operations guide names is one the code registers, and every registered one is documented', async (t) => {
  t.ok(registered.size >= 20, `${registered.size} metrics registered`)
  const rules = readFileSync(rulesPath, 'utf8')
  const inRules = new Set([...rules.matchAll(/expr: .*/g)].flatMap((m) => [...m[0].matchAll(/vitrage_persistor_[a-z_]+/g)].map((n) => n[0])))
  t.ok(inRules.size >= 8, `${inRules.size} metrics used by the alerts`)
  for (const name of inRules) t.ok(known(name), `alert metric ${name} is registered`)

  // Its "Metrics" section; it abbreviates a family as `…_suffix` after naming its first member in full.
  const whole = readFileSync(join(root, 'docs', 'operations.md'), 'utf8')
  const guide = whole.slice(whole.indexOf('## Metrics'), whole.indexOf('\n## ', whole.indexOf('## Metrics') + 1))
  const documented = new Set([...guide.matchAll(/`(?:vitrage_persistor|…)(_[a-z_]+)/g)].map((m) => `vitrage_persistor${m[1] as string}`))
  for (const name of documented) t.ok(known(name), `documented metric ${name} is registered`)
  for (const name of registered) t.ok(documented.has(name), `registered metric ${name} is documented`)
})

t.test('the alert rules are each complete: alert, expr, severity, summary', async (t) => {
  const rules = readFileSync(rulesPath, 'utf8').split(/\n(?= {6}- alert: )/).slice(1)
  t.ok(rules.length >= 8, `${rules.length} rules`)
  for (const rule of rules) {
    const name = /- alert: (\w+)/.exec(rule)?.[1] ?? '?'
    t.match(rule, /\n {8}expr: \S/, `${name}: expr`)
    t.match(rule, /\n {10}severity: (critical|warning|info)\n/, `${name}: severity`)
    t.match(rule, /\n {10}summary: "/, `${name}: summary`)
  }
})

const promtool = spawnSync('promtool', ['--version'], { encoding: 'utf8' })
t.test('promtool accepts the alert rules, and they fire (or not) as their unit tests say', { skip: promtool.error === undefined ? false : `promtool is not installed (Debian: apt-get install prometheus): ${promtool.error.message}` }, async (t) => {
  const checked = spawnSync('promtool', ['check', 'rules', rulesPath], { encoding: 'utf8' })
  t.equal(checked.status, 0, `promtool check rules: ${checked.stdout}${checked.stderr}`)
  // A standby instance raises nothing; a job where no instance consumes or stores does.
  const tested = spawnSync('promtool', ['test', 'rules', 'prometheus-alerts.test.yml'], { encoding: 'utf8', cwd: join(root, 'docs') })
  t.equal(tested.status, 0, `promtool test rules: ${tested.stdout}${tested.stderr}`)
})

const unit = join(root, 'docs', 'deploy', 'vitrage-persistor.service')
const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' })
t.test('systemd accepts the unit, and its stop timeout outlasts the drain', { skip: analyze.error === undefined ? false : `systemd-analyze is not installed: ${analyze.error.message}` }, async (t) => {
  const checked = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', cwd: '/' })
  t.equal(checked.status, 0, `systemd-analyze verify: ${checked.stdout}${checked.stderr}`)
  t.equal(`${checked.stdout}${checked.stderr}`.trim(), '', 'no warnings')
  const text = readFileSync(unit, 'utf8')
  const stop = Number(/^TimeoutStopSec=(\d+)$/m.exec(text)?.[1])
  t.ok(stop * 1000 > 30_000, `TimeoutStopSec=${stop} is longer than --shutdown-timeout-ms' default (30 s)`)
})

const dashboardPath = join(root, 'docs', 'deploy', 'grafana-dashboard.json')
interface DashboardPanel {
  readonly id: number
  readonly type: string
  readonly title: string
  readonly gridPos: { x: number; y: number; w: number; h: number }
  readonly datasource?: { uid: string }
  readonly targets?: readonly { expr: string }[]
}
const dashboard = JSON.parse(readFileSync(dashboardPath, 'utf8')) as { panels: DashboardPanel[] }
const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((q) => ({ panel: p.title, expr: q.expr })))
// Grafana's variables, as Prometheus would see them once Grafana has put them in.
const asPrometheusSees = (expr: string): string => expr.replaceAll('$__rate_interval', '5m').replaceAll('$job', '.+').replaceAll('$instance', '.+')

t.test("the Grafana dashboard names only metrics that exist, and has a panel for every one the code registers", async (t) => {
  const { Registry, collectDefaultMetrics } = await import('prom-client')
  const defaults = new Registry()
  collectDefaultMetrics({ register: defaults })
  const processMetrics = new Set((await defaults.getMetricsAsJSON()).map((m) => m.name))
  t.ok(queries.length >= 20, `${queries.length} queries`)
  const named = new Set(queries.flatMap((q) => [...q.expr.matchAll(/\b(?:vitrage_persistor|process|nodejs)_[a-z0-9_]+/g)].map((m) => m[0])))
  for (const name of named) {
    const ok = name.startsWith('vitrage_persistor_') ? known(name) : processMetrics.has(name.replace(/_(bucket|sum|count)$/, '')) || processMetrics.has(name)
    t.ok(ok, `dashboard metric ${name} exists`)
  }
  for (const name of registered) t.ok(named.has(name) || [...named].some((n) => n.replace(/_(bucket|sum|count)$/, '') === name), `registered metric ${name} is on the dashboard`)
  for (const p of dashboard.panels.filter((p) => p.type !== 'row')) t.equal(p.datasource?.uid, '${datasource}', `${p.title}: the data source is the dashboard's variable`)
  t.equal(new Set(dashboard.panels.map((p) => p.id)).size, dashboard.panels.length, 'panel ids are unique')
  const overlap = (a: DashboardPanel['gridPos'], b: DashboardPanel['gridPos']): boolean =>
    a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h
  const clashes = dashboard.panels.flatMap((a, i) => dashboard.panels.slice(i + 1).filter((b) => overlap(a.gridPos, b.gridPos)).map((b) => `${a.title} / ${b.title}`))
  t.same(clashes, [], 'no two panels overlap')
  t.ok(dashboard.panels.every((p) => p.gridPos.x + p.gridPos.w <= 24), 'every panel fits the 24-column grid')
})

t.test("promtool parses every query of the Grafana dashboard", { skip: promtool.error === undefined ? false : `promtool is not installed (Debian: apt-get install prometheus): ${promtool.error.message}` }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vp-dashboard-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // As recording rules: `check rules` parses each expression and names the one it cannot.
  const rules = ['groups:', '  - name: dashboard', '    rules:', ...queries.flatMap((q, i) => [`      - record: dashboard:query_${i}`, `        expr: ${JSON.stringify(asPrometheusSees(q.expr))}`])]
  writeFileSync(join(dir, 'rules.yml'), `${rules.join('\n')}\n`)
  const checked = spawnSync('promtool', ['check', 'rules', join(dir, 'rules.yml')], { encoding: 'utf8' })
  t.equal(checked.status, 0, `promtool check rules: ${checked.stdout}${checked.stderr}`)
  t.match(checked.stdout, new RegExp(`SUCCESS: ${queries.length} rules found`))
})
