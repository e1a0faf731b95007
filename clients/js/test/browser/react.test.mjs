// A React page built from useKraken and useVideoCall (in StrictMode):
// it renders the peer list, completes a call, and leaves no socket, track
// or peer connection behind when it unmounts.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import { assertVideoPlays, openPage, pageWait, worldPerFile } from './harness.mjs'

const shared = worldPerFile()

test('a React page built from the hooks renders the peer list and completes a call', async () => {
  const context = await shared.newContext()
  const room = 'react-call'
  const alice = await openPage(context, shared.world, 'react.html', { room, name: 'Alice' })
  const bob = await openPage(context, shared.world, 'react.html', { room, name: 'Bob' })

  await pageWait(alice, () => document.querySelector('#peers li .name')?.textContent === 'Bob', null, {
    what: 'Bob in Alice list',
  })
  await pageWait(bob, () => document.querySelector('#peers li .name')?.textContent === 'Alice', null, {
    what: 'Alice in Bob list',
  })
  assert.equal(await alice.textContent('#status'), 'connected')
  assert.equal(await alice.$$eval('#peers li', (items) => items.length), 1, 'StrictMode leaves one client')

  await alice.click('#peers li .call')
  await bob.waitForSelector('#incoming .accept', { timeout: 15000 })
  assert.equal(await bob.textContent('#incoming .accept'), 'Accept Alice')
  await bob.click('#incoming .accept')

  await assertVideoPlays(alice, '#remote video')
  await assertVideoPlays(bob, '#remote video')
  await assertVideoPlays(alice, '#local video')
  assert.equal(await bob.$$eval('#incoming .accept', (items) => items.length), 0)

  // Hang up from Bob: both sides drop the remote stream and close the camera.
  await bob.click('#hangup')
  for (const tab of [alice, bob]) {
    await pageWait(tab, () => document.querySelectorAll('#remote video').length === 0, null, {
      what: 'the remote video to go',
    })
    await pageWait(tab, () => window.test.leftovers().liveTracks === 0, null, { what: 'the camera to close' })
    await pageWait(tab, () => document.querySelectorAll('#local video').length === 0, null, {
      what: 'the local preview to go',
    })
  }
  assert.deepEqual([...alice.errors, ...bob.errors], [])
})

test('unmounting in a call closes the socket, the peer connection and every track', async () => {
  const context = await shared.newContext()
  const room = 'react-unmount'
  const alice = await openPage(context, shared.world, 'react.html', { room, name: 'Alice' })
  const bob = await openPage(context, shared.world, 'react.html', { room, name: 'Bob', accept: 'auto' })
  await pageWait(alice, () => document.querySelector('#peers li .call'), null, { what: 'Bob in the list' })
  await alice.click('#peers li .call')
  await assertVideoPlays(alice, '#remote video')
  await assertVideoPlays(bob, '#remote video')

  await alice.evaluate(() => window.test.unmount())
  const leftovers = await pageWait(
    alice,
    () => {
      const left = window.test.leftovers()
      return left.liveTracks === 0 && left.openConnections === 0 && left.openSockets === 0 ? left : null
    },
    null,
    { what: 'everything to close' },
  )
  assert.ok(leftovers.tracks >= 2 && leftovers.connections >= 1 && leftovers.sockets >= 1, JSON.stringify(leftovers))

  // Bob sees the call end and Alice leave, and releases his camera too.
  await pageWait(bob, () => document.querySelectorAll('#remote video').length === 0, null, { what: 'Bob call to end' })
  await pageWait(bob, () => document.querySelectorAll('#peers li').length === 0, null, { what: 'Alice to leave' })
  await pageWait(bob, () => window.test.leftovers().liveTracks === 0, null, { what: 'Bob camera to close' })
})
