import t from 'tap'
import { type BrokerStatus, type DatabaseStatus, problemsOf, STALE_CHECKPOINT_MS } from './status.js'

const now = new Date('2026-11-30T12:00:00Z')
const before = (ms: number): string => new Date(now.getTime() - ms).toISOString()

const database = (over: Partial<Extract<DatabaseStatus, { ok: true }>> = {}): DatabaseStatus => ({
  ok: true,
  pendingMigrations: [],
  unknownMigrations: [],
  events: { prunedBelow: 1, head: 100, newest: { id: 100, collectorTimestamp: before(1000), persistedAt: before(1000) } },
  checkpoints: [],
  snapshots: { kept: 0, newest: null, notOfThisLog: [] },
  ...over,
})
const broker = (over: Partial<Extract<BrokerStatus, { ok: true }>> = {}): BrokerStatus => ({
  ok: true,
  queue: 'q',
  ready: 0,
  consumers: 1,
  deadLetterQueue: 'q.dead',
  deadLetters: 0,
  ...over,
})

t.test('a healthy persistor has no problems', async (t) => {
  t.same(problemsOf(database(), broker(), now), [])
  t.same(problemsOf(database(), undefined, now), [], 'the broker left out')
})

t.test('each condition that needs an operator is named with what to do', async (t) => {
  t.same(problemsOf(database({ pendingMigrations: ['0009_x'] }), broker({ consumers: 0, deadLetters: 2 }), now), [
    'migrations pending: 0009_x (run `vitrage-persistor migrate`)',
    'nothing consumes q (is `vitrage-persistor run` up?)',
    '2 dead letters in q.dead (`vitrage-persistor dead-letters list`)',
  ])
  t.same(problemsOf({ ok: false, error: 'down' }, { ok: false, error: 'refused' }, now), ['database: down', 'broker: refused'])
  t.same(problemsOf(database(), { ok: true, queue: 'q', deadLetterQueue: 'q.dead' }, now), ['queue q does not exist (the persistor declares it when it starts)'])
})

t.test('a checkpoint is stale only when it is behind and has not moved for ten minutes', async (t) => {
  const checkpoint = (behind: number, idleMs: number) => database({ checkpoints: [{ name: 'history', position: 100 - behind, updatedAt: before(idleMs), behind }] })
  t.same(problemsOf(checkpoint(5, STALE_CHECKPOINT_MS - 1000), undefined, now), [], 'behind but moving')
  t.same(problemsOf(checkpoint(0, 3_600_000), undefined, now), [], 'idle but caught up (no events)')
  t.same(problemsOf(checkpoint(5, 3_600_000), undefined, now), ['checkpoint history is 5 events behind and has not moved for 60 min (its reader stopped? it holds back prune)'])
})

t.test('a checkpoint or the newest snapshot past the newest stored event is named: the log lost events its readers had', async (t) => {
  const past = database({
    checkpoints: [
      { name: 'history', position: 130, updatedAt: before(1000), behind: 0 },
      { name: 'mirror-eventstore', position: 100, updatedAt: before(1000), behind: 0 },
    ],
    snapshots: { kept: 2, newest: { eventId: 120, createdAt: before(1000), behind: 0 }, notOfThisLog: [] },
  })
  t.same(problemsOf(past, undefined, now), [
    'checkpoint history is at event 130, past the newest stored event (100): the log lost events it had read (restored or failed over?); it would skip the next 30 (docs/operations.md, "Restore and failover")',
    'the newest graph snapshot is at event 120, past the newest stored event (100): it holds events the log lost (docs/operations.md, "Restore and failover")',
  ])
})

t.test('graph snapshots not of this log, at or below the newest stored event, are named (review 57: status said "problems none")', async (t) => {
  const snapshots = (notOfThisLog: number[]) => database({ snapshots: { kept: 3, newest: { eventId: 90, createdAt: before(1000), behind: 10 }, notOfThisLog } })
  t.same(problemsOf(snapshots([]), undefined, now), [])
  t.same(problemsOf(snapshots([90]), undefined, now), [
    'the graph snapshot at event 90 is not of this log: the log holds another message there (the event table restored or failed over without its snapshots); graph, follow and prune pass it over (docs/operations.md, "Restore and failover")',
  ])
  t.match(problemsOf(snapshots([50, 90, 120]), undefined, now), [/^2 graph snapshots, at events 50, 90 are not of this log/], 'one past the head is named as such, not twice')
})

t.test('migrations this version does not know are named (review 60: a rollback said nothing)', async (t) => {
  t.same(problemsOf(database({ unknownMigrations: ['0015_future'] }), undefined, now), [
    'the database has migrations this version does not know (0015_future): a newer version applied them (rolled back, or running beside one?); this version runs without what they add',
  ])
})

t.test('pending migrations another instance is applying now are said to be, not "run migrate" (review 60)', async (t) => {
  t.same(problemsOf(database({ pendingMigrations: ['0014_x'], applyingPid: 4242 }), undefined, now), [
    "migrations pending: 0014_x, being applied now (server process 4242 holds the migration lock: another instance's run or migrate; wait for it)",
  ])
})
