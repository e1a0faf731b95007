// Stock y-websocket WebsocketProviders in two pages converge on the same
// text through Kraken (disableBc, so the tabs cannot sync around the
// server), and KrakenClient with a doc joins the same document.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import { openPage, pageWait, worldPerFile } from './harness.mjs'

const shared = worldPerFile()

const text = (tab) => tab.evaluate(() => window.test.text())

test('two pages with stock WebsocketProviders converge on the same text', async () => {
  const context = await shared.newContext()
  const room = 'stock-converge'
  const one = await openPage(context, shared.world, 'stock.html', { room, kind: 'stock' })
  const two = await openPage(context, shared.world, 'stock.html', { room, kind: 'stock' })
  for (const tab of [one, two]) {
    await pageWait(tab, () => window.test.synced, null, { what: 'the provider to sync' })
  }

  // Concurrent edits from both pages, then each page's view must agree.
  await Promise.all([
    one.evaluate(() => {
      for (let i = 0; i < 20; i += 1) window.test.insert(0, 'a')
    }),
    two.evaluate(() => {
      for (let i = 0; i < 20; i += 1) window.test.insert(1000, 'b')
    }),
  ])
  await pageWait(one, () => window.test.text().length === 40, null, { what: 'page one to get 40 characters' })
  await pageWait(two, () => window.test.text().length === 40, null, { what: 'page two to get 40 characters' })
  assert.equal(await text(one), await text(two))
  assert.equal((await text(one)).replace(/b/g, ''), 'a'.repeat(20))

  // A page that joins later gets the document from the server, and a
  // KrakenClient with a doc converges with the stock clients.
  const three = await openPage(context, shared.world, 'stock.html', { room, kind: 'kraken' })
  await pageWait(three, () => window.test.synced, null, { what: 'KrakenClient to sync' })
  assert.equal(await text(three), await text(one))
  await three.evaluate(() => window.test.insert(0, 'K'))
  await pageWait(one, () => window.test.text().startsWith('K'), null, { what: 'the stock page to see K' })
  await pageWait(two, () => window.test.text().startsWith('K'), null, { what: 'the other stock page to see K' })
  assert.deepEqual([...one.errors, ...two.errors, ...three.errors], [])
})
