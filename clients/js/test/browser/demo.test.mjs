// The demo page as `twistd kraken --demo` serves it, in two tabs: a shared
// text typed in one tab appears in the other, each tab lists the other,
// and a call between them shows video on both sides.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { DEPLOYMENT_TOKEN, startKraken, waitFor } from '../support/kraken.mjs'
import { assertIsolated, assertVideoPlays, launchBrowser, pageWait } from './harness.mjs'

let kraken
let browser

before(async () => {
  assertIsolated()
  kraken = await startKraken({ args: ['--demo'] })
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await kraken?.stop()
})

test('the demo page works in two tabs: shared text, peer list and a call', async (t) => {
  const page = `${kraken.httpUrl}/demo/`
  const html = await waitFor(
    async () => {
      const response = await fetch(page, { signal: AbortSignal.timeout(5000) })
      return response.status === 200 ? response.text() : null
    },
    { what: 'the demo page to be served' },
  )
  assert.ok(!html.includes('<!--KRAKEN_DEMO_CONFIG-->'), 'the server filled in the configuration')
  const injected = /<script>window\.KRAKEN_DEMO = (\{.*?\});<\/script>/.exec(html)
  assert.ok(injected, 'the configuration script is in the page')
  const config = JSON.parse(injected[1])
  assert.equal(typeof config.token, 'string')
  assert.equal(config.room, 'demo')
  assert.ok(html.indexOf(injected[0]) < html.indexOf('</head>'), 'in <head>, before the page script')
  assert.ok(!html.includes(DEPLOYMENT_TOKEN), 'the page never holds the deployment token')

  const context = await browser.newContext()
  t.after(() => context.close())
  const tabs = []
  for (let i = 0; i < 2; i += 1) {
    const tab = await context.newPage()
    tab.errors = []
    tab.on('pageerror', (error) => tab.errors.push(String(error)))
    await tab.goto(page, { timeout: 15000 })
    await pageWait(tab, () => document.getElementById('status').dataset.status === 'connected', null, {
      what: 'the tab to connect',
    })
    await pageWait(tab, () => !document.getElementById('text').disabled, null, { what: 'the text to sync' })
    tabs.push(tab)
  }
  const [one, two] = tabs
  const idOf = (tab) => tab.evaluate(() => document.getElementById('me').dataset.peerId)
  const [oneId, twoId] = [await idOf(one), await idOf(two)]
  assert.notEqual(oneId, twoId)

  // Each tab lists the other.
  const nameOf = (tab) => tab.textContent('#me')
  await pageWait(one, (id) => document.querySelector(`#peers li[data-peer-id="${id}"]`), twoId, { what: 'tab two listed' })
  await pageWait(two, (id) => document.querySelector(`#peers li[data-peer-id="${id}"]`), oneId, { what: 'tab one listed' })
  assert.ok((await one.textContent(`#peers li[data-peer-id="${twoId}"]`)).startsWith(await nameOf(two)))

  // Typing in one tab shows in the other, both ways.
  await one.click('#text')
  await one.keyboard.type('Hello from tab one.')
  await pageWait(two, () => document.getElementById('text').value === 'Hello from tab one.', null, {
    what: 'the text in tab two',
  })
  await two.click('#text')
  await two.keyboard.press('End')
  await two.keyboard.type(' And from tab two.')
  await pageWait(one, () => document.getElementById('text').value === 'Hello from tab one. And from tab two.', null, {
    what: 'the text back in tab one',
  })

  // A call from tab one, accepted in tab two: video on both sides.
  await one.click(`#peers li[data-peer-id="${twoId}"] button.call`)
  await two.waitForSelector(`#incoming [data-peer-id="${oneId}"] button.accept`, { timeout: 15000 })
  await two.click(`#incoming [data-peer-id="${oneId}"] button.accept`)
  const atOne = await assertVideoPlays(one, `#videos video[data-peer-id="${twoId}"]`)
  await assertVideoPlays(two, `#videos video[data-peer-id="${oneId}"]`)
  await assertVideoPlays(one, '#videos video[data-peer-id="local"]')
  t.diagnostic(`demo call: ${atOne.width}x${atOne.height} video playing in both tabs`)
  assert.equal(await one.textContent(`#peers li[data-peer-id="${twoId}"] button.call`), 'Hang up')

  // Hanging up in one tab ends the call in both, and the cameras close.
  await one.click(`#peers li[data-peer-id="${twoId}"] button.call`)
  for (const tab of [one, two]) {
    await pageWait(tab, () => document.querySelectorAll('#videos video').length === 0, null, {
      what: 'the videos to go',
    })
  }
  assert.equal(await two.textContent(`#peers li[data-peer-id="${oneId}"] button.call`), 'Call')
  assert.deepEqual([...one.errors, ...two.errors], [])
})
