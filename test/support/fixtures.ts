import { readFileSync } from 'node:fs'
import type { FixtureMessage } from './setup.js'

export const fixturePath = (name: string): URL => new URL(`../fixtures/${name}`, import.meta.url)

/** The 400 messages captured from Vitrage's own publisher, in publish order. */
export const rawFixtures = (): FixtureMessage[] =>
  readFileSync(fixturePath('vitrage-seed7-400.raw.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as FixtureMessage)

/** The inner oslo message of a fixture body. */
export const innerMessage = (m: FixtureMessage): Record<string, unknown> =>
  JSON.parse((JSON.parse(m.body) as { 'oslo.message': string })['oslo.message']) as Record<string, unknown>
