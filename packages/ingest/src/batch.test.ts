import { TestScheduler } from 'rxjs/testing'
import t, { type Test } from 'tap'
import { batchBySizeOrTime } from './batch.js'

const scheduler = (t: Test): TestScheduler => new TestScheduler((actual, expected) => t.same(actual, expected))

t.test('a batch closes when it reaches the size', async (t) => {
  scheduler(t).run(({ cold, expectObservable }) => {
    const source = cold('abcdef|')
    expectObservable(source.pipe(batchBySizeOrTime(3, 100))).toBe('--x--y|', { x: ['a', 'b', 'c'], y: ['d', 'e', 'f'] })
  })
})

t.test('a batch closes maxWait after its first item, not on a fixed clock', async (t) => {
  scheduler(t).run(({ cold, expectObservable }) => {
    const source = cold('a 9ms b 20ms c 29ms |')
    // a at 0, b at 10: the batch opened at 0 closes at 20. c at 31 opens a new one closing at 51.
    expectObservable(source.pipe(batchBySizeOrTime(10, 20))).toBe('20ms x 30ms y 9ms |', { x: ['a', 'b'], y: ['c'] })
  })
})

t.test('completion flushes the partial batch; an idle stream emits nothing', async (t) => {
  scheduler(t).run(({ cold, expectObservable }) => {
    expectObservable(cold('ab|').pipe(batchBySizeOrTime(10, 1000))).toBe('--(x|)', { x: ['a', 'b'] })
    expectObservable(cold('---------|').pipe(batchBySizeOrTime(10, 2))).toBe('---------|')
  })
})

t.test('an error drops the held items instead of emitting them', async (t) => {
  scheduler(t).run(({ cold, expectObservable }) => {
    expectObservable(cold('ab#').pipe(batchBySizeOrTime(10, 1000))).toBe('--#')
  })
})
