// KrakenClient in Chromium: peer lists, real WebRTC calls with fake camera
// and microphone on loopback, hangup, glare, a dropped socket during a call,
// and closing a page.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import { assertVideoPlays, openPage, pageWait, worldPerFile } from './harness.mjs'

const shared = worldPerFile()
let roomCounter = 0

function freshRoom() {
  roomCounter += 1
  return `calls-${roomCounter}`
}

/** Two pages in one room that see each other. */
async function twoPeers(params = {}) {
  const context = await shared.newContext()
  const room = freshRoom()
  const alice = await openPage(context, shared.world, 'call.html', { room, name: 'Alice', peerId: 'alice', ...params })
  await alice.evaluate(() => window.test.connected)
  const bob = await openPage(context, shared.world, 'call.html', { room, name: 'Bob', peerId: 'bob', ...params })
  await bob.evaluate(() => window.test.connected)
  await pageWait(alice, () => document.querySelector('#peers li[data-peer-id="bob"]'), null, { what: 'Bob in Alice list' })
  return { alice, bob }
}

const events = (tab, type) => tab.evaluate((t) => window.test.of(t), type)

test('two pages in one room see each other in their peer lists', async () => {
  const { alice, bob } = await twoPeers()
  assert.equal(await alice.textContent('#peers li[data-peer-id="bob"]'), 'Bob')
  assert.equal(await bob.textContent('#peers li[data-peer-id="alice"]'), 'Alice')
  assert.equal(await alice.textContent('#status'), 'connected')
  assert.deepEqual(await events(alice, 'peer-joined').then((e) => e.map((x) => x.peer)), ['bob'])
  assert.deepEqual(alice.errors, [])
})

test('a call is established on both sides, the remote video plays, and hangup ends it on both', async (t) => {
  const { alice, bob } = await twoPeers({ accept: 'auto' })
  const took = await alice.evaluate(() => window.test.call('bob', { video: true, audio: true }))
  t.diagnostic(`call() to call-established: ${Math.round(took)} ms`)
  await pageWait(bob, () => window.test.of('call-established').length === 1, null, { what: 'Bob established' })
  assert.deepEqual(await events(bob, 'call-incoming').then((e) => e.map((x) => [x.from, x.name])), [['alice', 'Alice']])
  assert.equal((await events(alice, 'call-established'))[0].tracks, 2, 'audio and video from Bob')

  const atBob = await assertVideoPlays(bob, 'video[data-peer-id="alice"]')
  const atAlice = await assertVideoPlays(alice, 'video[data-peer-id="bob"]')
  t.diagnostic(`remote video ${atAlice.width}x${atAlice.height} at Alice, ${atBob.width}x${atBob.height} at Bob`)

  await alice.evaluate(() => window.test.hangup('bob'))
  await pageWait(bob, () => window.test.of('call-ended').length === 1, null, { what: 'Bob call-ended' })
  assert.deepEqual(await events(alice, 'call-ended').then((e) => e.map((x) => x.reason)), ['hangup'])
  assert.deepEqual(await events(bob, 'call-ended').then((e) => e.map((x) => x.reason)), ['hangup'])
  assert.equal(await bob.$$eval('video', (v) => v.length), 0)
  assert.equal(await alice.evaluate(() => window.test.client.activeCalls.length), 0)
  assert.deepEqual(await events(alice, 'error'), [])
  assert.deepEqual(await events(bob, 'error'), [])
})

test('both peers calling each other at once (glare) end up in one working call, round after round', async () => {
  const { alice, bob } = await twoPeers()
  // Exactly at once, and a little apart on either side: each round must end
  // in one call on both sides, never a stuck one.
  const rounds = [
    [0, 0],
    [0, 0],
    [0, 15],
    [15, 0],
    [0, 60],
    [60, 0],
  ]
  for (const [index, [aliceDelay, bobDelay]] of rounds.entries()) {
    const placed = (tab, peer, delay) =>
      tab.evaluate(
        ([to, wait]) => new Promise((resolve) => setTimeout(resolve, wait)).then(() => window.test.call(to)),
        [peer, delay],
      )
    const [a, b] = await Promise.all([placed(alice, 'bob', aliceDelay), placed(bob, 'alice', bobDelay)])
    assert.ok(a > 0 && b > 0)
    for (const tab of [alice, bob]) {
      assert.equal((await events(tab, 'call-established')).length, index + 1, `round ${index}`)
    }
    if (aliceDelay === bobDelay) {
      await assertVideoPlays(alice, 'video[data-peer-id="bob"]')
      await assertVideoPlays(bob, 'video[data-peer-id="alice"]')
    }
    await (index % 2 ? alice : bob).evaluate(() => window.test.hangup())
    for (const tab of [alice, bob]) {
      await pageWait(tab, (n) => window.test.of('call-ended').length === n, index + 1, { what: `round ${index} to end` })
      assert.deepEqual(await tab.evaluate(() => window.test.client.activeCalls), [])
    }
  }
  assert.deepEqual(await events(alice, 'error'), [])
  assert.deepEqual(await events(bob, 'error'), [])
})

test('a rejected call ends with "rejected" on both sides and call() rejects', async () => {
  const { alice, bob } = await twoPeers()
  const calling = alice.evaluate(() => window.test.call('bob').then(() => 'established', (e) => e.code))
  await pageWait(bob, () => window.test.of('call-incoming').length === 1, null, { what: 'Bob ringing' })
  await bob.evaluate(() => window.test.reject('alice'))
  assert.equal(await calling, 'call-rejected')
  assert.deepEqual(await events(alice, 'call-ended').then((e) => e.map((x) => x.reason)), ['rejected'])
  assert.deepEqual(await events(bob, 'call-ended').then((e) => e.map((x) => x.reason)), ['rejected'])
})

test('a call survives its signaling socket dropping and coming back', async () => {
  const { alice, bob } = await twoPeers({ accept: 'auto' })
  await alice.evaluate(() => window.test.call('bob'))
  await assertVideoPlays(bob, 'video[data-peer-id="alice"]')

  await alice.evaluate(() => window.test.dropSocket())
  await pageWait(
    alice,
    () => window.test.of('status').filter((e) => e.status === 'connected').length === 2,
    null,
    { what: 'Alice to reconnect' },
  )
  await assertVideoPlays(bob, 'video[data-peer-id="alice"]')
  await assertVideoPlays(alice, 'video[data-peer-id="bob"]')
  assert.deepEqual(await events(alice, 'call-ended'), [])
  assert.deepEqual(await events(bob, 'call-ended'), [])
  assert.equal(await alice.evaluate(() => window.test.client.peerId), 'alice')

  // Signaling still reaches both ends: hang up from the side that stayed.
  await bob.evaluate(() => window.test.hangup('alice'))
  await pageWait(alice, () => window.test.of('call-ended').length === 1, null, { what: 'Alice call-ended' })
})

test('closing a page gives peer-left on the other, and ends its call', async (t) => {
  const { alice, bob } = await twoPeers({ accept: 'auto' })
  await alice.evaluate(() => window.test.call('bob'))
  await alice.close({ runBeforeUnload: true })
  await pageWait(bob, () => window.test.of('peer-left').length === 1, null, { what: 'Bob peer-left' })
  await pageWait(bob, () => window.test.of('call-ended').length === 1, null, { what: 'Bob call-ended' })
  assert.deepEqual(await events(bob, 'peer-left').then((e) => e.map((x) => x.peer)), ['alice'])
  const [ended] = await events(bob, 'call-ended')
  t.diagnostic(`the call ended with "${ended.reason}" (the closing page hangs up on pagehide)`)
  assert.equal(ended.reason, 'hangup')
  assert.equal(await bob.$$eval('#peers li', (items) => items.length), 0)
  assert.equal(await bob.$$eval('video', (items) => items.length), 0)
})

test('call setup time on loopback', async (t) => {
  const { alice } = await twoPeers({ accept: 'auto' })
  const times = []
  for (let i = 0; i < 5; i += 1) {
    times.push(await alice.evaluate(() => window.test.call('bob')))
    await alice.evaluate(() => window.test.hangup('bob'))
    await pageWait(alice, (n) => window.test.of('call-ended').length === n, i + 1, { what: 'the hangup' })
  }
  times.sort((x, y) => x - y)
  const median = times[2]
  t.diagnostic(`call() to call-established over 5 calls: median ${Math.round(median)} ms, ` +
    `min ${Math.round(times[0])} ms, max ${Math.round(times[4])} ms`)
  console.log(`# call setup on loopback: median ${Math.round(median)} ms (min ${Math.round(times[0])}, max ${Math.round(times[4])})`)
  assert.ok(median < 5000)
})
