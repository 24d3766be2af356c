import { STORE_CLOSED } from '@vitrage-persistor/core'
import { createTestDatabase } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { schemaTemplate } from './migrate.js'
import { PgEventStore } from './store.js'

t.test('a call made just before close() settles as store-closed (pg-pool never settles a connect that end() overtook)', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(() => db.drop())
  for (let round = 0; round < 5; round++) {
    const store = new PgEventStore({ connectionString: db.url, maxConnections: 2 })
    t.same(await store.headId()(), E.right(0), 'an idle client in the pool')
    const pending = store.headId()()
    await store.close()
    const settled = await Promise.race([pending, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 3_000).unref())])
    t.not(settled, 'hung', `round ${round}: settled`)
    if (settled !== 'hung' && E.isLeft(settled)) t.equal(settled.left.code, STORE_CLOSED)
    t.same(await store.headId()(), E.left({ kind: 'fatal', message: 'the event store is closed', code: STORE_CLOSED }), 'and every call after')
  }
})
