import { TEST_DATABASE_URL } from '@vitrage-persistor/testing'
import pg from 'pg'
import t from 'tap'
import { sessionOptions } from './connection.js'

t.test("sessions pin search_path and DateStyle; a URL's own options come after them and win", async (t) => {
  t.equal(sessionOptions('postgres://u@h/db'), '-c search_path=public -c DateStyle=ISO')
  t.equal(sessionOptions('postgres://u@h/db?options=-c%20search_path%3Dvp'), '-c search_path=public -c DateStyle=ISO -c search_path=vp')
  t.equal(sessionOptions('socket:/var/run/postgresql?db=x', '-c a=1'), '-c search_path=public -c DateStyle=ISO -c a=1')
  // What the server makes of them: the last setting of a name wins.
  const show = async (url: string): Promise<string> => {
    const c = new pg.Client({ connectionString: url, options: sessionOptions(url) })
    await c.connect()
    try {
      return (await c.query<{ search_path: string }>('SHOW search_path')).rows[0]?.search_path ?? ''
    } finally {
      await c.end()
    }
  }
  t.equal(await show(TEST_DATABASE_URL), 'public')
  t.equal(await show(`${TEST_DATABASE_URL}?options=-c%20search_path%3Dvp_elsewhere`), 'vp_elsewhere')
})
