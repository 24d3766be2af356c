/** Assertions the oslo.messaging interop tests share. */
import { eventually } from '@vitrage-persistor/testing'
import type { Test } from 'tap'
import type { OsloSend } from './oslo.js'
import type { World } from './setup.js'

export const storedIds = async (world: World): Promise<string[]> =>
  (await world.sql.query<{ message_id: string }>('SELECT message_id::text FROM event ORDER BY id')).rows.map((r) => r.message_id)

/** oslo's publisher sent every notification, and they are the event table's rows, in order. */
export const sentAndStored = async (t: Test, world: World, sent: { code: number; sends: OsloSend[]; stderr: string }): Promise<void> => {
  t.equal(sent.code, 0, `oslo's publisher sent them: ${sent.stderr}`)
  t.ok(sent.sends.every((s) => s.ok))
  await eventually('stored', async () => (await storedIds(world)).length === sent.sends.length)
  t.same(await storedIds(world), sent.sends.map((s) => s.message_id), 'stored, in order')
}
