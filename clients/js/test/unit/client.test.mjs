// Unit tests of KrakenClient in Node against a real Kraken (twistd kraken),
// with `ws` as the WebSocket polyfill. Calls need WebRTC and are tested in
// Chromium (test/browser); here every peer relay is checked on the wire.

import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'

import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

import { KrakenClient, buildUrl } from '@kraken/client'
import { KrakenClient as SyncingClient } from '@kraken/client/yjs'

import { nextEvent, record, startKraken, startProxy, waitFor } from '../support/kraken.mjs'

let kraken
let token
let roomCounter = 0
const cleanups = []

/** A room name no other test uses. */
function freshRoom() {
  roomCounter += 1
  return `room-${process.pid}-${roomCounter}`
}

/** A Y.Doc destroyed at the end (which stops its awareness timers). */
function newDoc() {
  const doc = new Y.Doc()
  cleanups.push(() => doc.destroy())
  return doc
}

/** A client that the test run disconnects at the end. */
function client(options) {
  const made = new KrakenClient({ url: kraken.wsUrl, token, WebSocket, ...options })
  cleanups.push(() => made.destroy())
  return made
}

/**
 * A bare socket speaking the signaling protocol by hand, recording every
 * frame it receives.
 */
async function rawPeer(room, { peerId, name = peerId, secret, url = kraken.wsUrl } = {}) {
  const ws = new WebSocket(buildUrl(url, room, token))
  const peer = {
    ws,
    texts: [],
    binaries: 0,
    closeCode: null,
    signals() {
      return this.texts.filter((m) => m.kraken === 'signal').map((m) => m.signal)
    },
    errors() {
      return this.texts.filter((m) => m.kraken === 'error').map((m) => m.error)
    },
    send(signal) {
      ws.send(JSON.stringify({ kraken: 'signal', signal }))
    },
    close() {
      ws.close()
    },
  }
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      peer.binaries += 1
    } else {
      peer.texts.push(JSON.parse(data.toString()))
    }
  })
  ws.on('close', (code) => {
    peer.closeCode = code
  })
  cleanups.push(() => ws.terminate())
  await new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', reject)
  })
  if (peerId) {
    peer.send({ type: 0, from: peerId, name, ...(secret ? { secret } : {}) })
    await waitFor(() => peer.signals().some((s) => s.type === 5), { what: 'a PeerList' })
  }
  return peer
}

before(async () => {
  kraken = await startKraken()
  token = await kraken.registerApp('js-client-tests')
})

after(async () => {
  for (const cleanup of cleanups.reverse()) {
    try {
      await cleanup()
    } catch {
      // already gone
    }
  }
  await kraken?.stop()
})

describe('URL', () => {
  test('is built exactly as WebsocketProvider builds it', () => {
    const cases = [
      ['ws://127.0.0.1:1234', 'my-document', 'a b&c'],
      ['ws://127.0.0.1:1234/', 'my-document', 'tok'],
      ['wss://host.example/sync//', 'org/notes', 'x/y=z'],
      ['ws://h:1', 'ünïcode room', 'ä'],
    ]
    for (const [url, room, tok] of cases) {
      const provider = new WebsocketProvider(url, room, newDoc(), {
        connect: false,
        disableBc: true,
        params: { token: tok },
        WebSocketPolyfill: WebSocket,
      })
      const expected = provider.url
      provider.destroy()
      assert.equal(buildUrl(url, room, tok), expected)
      const made = new KrakenClient({ url, token: tok, room, name: 'n', WebSocket })
      assert.equal(made.url, expected)
    }
    assert.equal(buildUrl('ws://h:1', 'r', 'a b&c'), 'ws://h:1/r?token=a%20b%26c')
  })

  test('reaches the same room as a stock WebsocketProvider, slashes included', async () => {
    const room = `org/${freshRoom()}`
    const doc = newDoc()
    doc.getText('t').insert(0, 'from the stock client')
    const provider = new WebsocketProvider(kraken.wsUrl, room, doc, {
      disableBc: true,
      params: { token },
      WebSocketPolyfill: WebSocket,
    })
    cleanups.push(() => provider.destroy())

    const mine = newDoc()
    const syncing = new SyncingClient({ url: kraken.wsUrl, token, room, name: 'kc', doc: mine, WebSocket })
    cleanups.push(() => syncing.destroy())
    await syncing.connect()
    await waitFor(() => mine.getText('t').toString() === 'from the stock client', { what: 'the stock text' })
  })

  test('rejects options that are not strings, and a secret of the wrong size', () => {
    assert.throws(() => new KrakenClient({ url: 'ws://h', token: 't', room: 'r', WebSocket }), TypeError)
    assert.throws(
      () => new KrakenClient({ url: 'ws://h', token: 't', room: 'r', name: 'n', secret: 'short', WebSocket }),
      TypeError,
    )
    assert.throws(
      () => new KrakenClient({ url: 'ws://h', token: 't', room: 'r', name: 'n', doc: newDoc(), WebSocket }),
      /@kraken\/client\/yjs/,
    )
  })
})

describe('peers', () => {
  test('connect() resolves with the other peers once the first peer list arrives', async () => {
    const room = freshRoom()
    const alice = client({ room, name: 'Alice' })
    const aliceEvents = record(alice)
    assert.deepEqual(await alice.connect(), [])
    assert.equal(alice.status, 'connected')
    assert.deepEqual(
      aliceEvents.filter((e) => e.type === 'status').map((e) => e.status),
      ['connecting', 'connected'],
    )
    assert.deepEqual(aliceEvents.find((e) => e.type === 'peers').peers, [])

    const bob = client({ room, name: 'Bob', meta: { color: 'blue' } })
    const peers = await bob.connect()
    assert.deepEqual(peers, [{ peerId: alice.peerId, name: 'Alice', meta: null }])
    await waitFor(() => alice.peers.length === 1, { what: 'Alice to see Bob' })
    assert.match(alice.peerId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    assert.equal(await alice.connect().then((p) => p.length), 1, 'connect() again resolves at once')
  })

  test('peer-joined and peer-left reach the others, with the peer list', async () => {
    const room = freshRoom()
    const alice = client({ room, name: 'Alice' })
    await alice.connect()
    const events = record(alice)

    const bob = client({ room, name: 'Bob', peerId: 'bob-1', meta: { role: 'tester' } })
    await bob.connect()
    const joined = await waitFor(() => events.find((e) => e.type === 'peer-joined'), { what: 'peer-joined' })
    assert.deepEqual(joined.peer, { peerId: 'bob-1', name: 'Bob', meta: { role: 'tester' } })
    assert.deepEqual(alice.peers, [joined.peer])
    assert.deepEqual(events.filter((e) => e.type === 'peers').at(-1).peers, [joined.peer])

    bob.disconnect()
    const left = await waitFor(() => events.find((e) => e.type === 'peer-left'), { what: 'peer-left' })
    assert.equal(left.peer.peerId, 'bob-1')
    assert.deepEqual(alice.peers, [])
    assert.deepEqual(events.filter((e) => e.type === 'peers').at(-1).peers, [])
    assert.equal(bob.status, 'disconnected')
  })

  test('disconnect() stops for good and connect() opens again', async () => {
    const room = freshRoom()
    const alice = client({ room, name: 'Alice' })
    await alice.connect()
    const watcher = await rawPeer(room, { peerId: 'watcher' })
    alice.disconnect()
    await waitFor(() => watcher.signals().some((s) => s.type === 7), { what: 'PeerLeft' })
    assert.equal(alice.status, 'disconnected')

    await alice.connect()
    await waitFor(
      () => watcher.signals().filter((s) => s.type === 6 && s.peer.peerId === alice.peerId).length === 1,
      { what: 'PeerJoined after connect() again' },
    )
  })
})

describe('signaling', () => {
  test('an offer relayed by the server is a call-incoming; reject() answers with a Hangup "rejected"', async () => {
    const room = freshRoom()
    const alice = client({ room, name: 'Alice' })
    await alice.connect()
    const bob = await rawPeer(room, { peerId: 'bob', name: 'Bob' })
    await waitFor(() => alice.peers.length === 1, { what: 'Alice to see Bob' })

    const incoming = nextEvent(alice, (e) => e.type === 'call-incoming', { what: 'call-incoming' })
    const ended = nextEvent(alice, (e) => e.type === 'call-ended', { what: 'call-ended' })
    const sdp = { type: 'offer', sdp: 'v=0\r\n' }
    bob.send({ type: 1, to: alice.peerId, sdp, callId: 'call-1' })
    const event = await incoming
    assert.deepEqual(event.from, { peerId: 'bob', name: 'Bob', meta: null })
    assert.equal(typeof event.accept, 'function')
    // As user code would write it:
    assert.equal(`Incoming call from: ${event.from.name}`, 'Incoming call from: Bob')

    event.reject()
    assert.deepEqual(await ended, { type: 'call-ended', peer: event.from, reason: 'rejected' })
    const hangup = await waitFor(() => bob.signals().find((s) => s.type === 4), { what: 'the Hangup' })
    assert.deepEqual(hangup, { type: 4, to: 'bob', callId: 'call-1', reason: 'rejected', from: alice.peerId })
  })

  test('a Hangup from the caller ends a ringing call; late signals of it are ignored', async () => {
    const room = freshRoom()
    const alice = client({ room, name: 'Alice' })
    await alice.connect()
    const bob = await rawPeer(room, { peerId: 'bob', name: 'Bob' })
    await waitFor(() => alice.peers.length === 1, { what: 'Alice to see Bob' })
    const events = record(alice)

    bob.send({ type: 1, to: alice.peerId, sdp: { type: 'offer', sdp: 'v=0\r\n' }, callId: 'c1' })
    bob.send({ type: 3, to: alice.peerId, candidate: { candidate: '', sdpMid: '0' }, callId: 'c1' })
    bob.send({ type: 4, to: alice.peerId, callId: 'c1' })
    await waitFor(() => events.find((e) => e.type === 'call-ended'), { what: 'call-ended' })
    assert.deepEqual(
      events.filter((e) => e.type.startsWith('call')).map((e) => [e.type, e.reason]),
      [
        ['call-incoming', undefined],
        ['call-ended', 'hangup'],
      ],
    )

    // The same call's offer, arriving late, does not ring again; a new call does.
    bob.send({ type: 1, to: alice.peerId, sdp: { type: 'offer', sdp: 'v=0\r\n' }, callId: 'c1' })
    bob.send({ type: 1, to: alice.peerId, sdp: { type: 'offer', sdp: 'v=0\r\n' }, callId: 'c2' })
    await waitFor(() => events.filter((e) => e.type === 'call-incoming').length === 2, { what: 'the second call' })
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.equal(events.filter((e) => e.type === 'call-incoming').length, 2)
    assert.deepEqual(alice.activeCalls, ['bob'])
  })

  test('a peer that leaves while ringing ends the call with "peer-left"', async () => {
    const room = freshRoom()
    const alice = client({ room, name: 'Alice' })
    await alice.connect()
    const bob = await rawPeer(room, { peerId: 'bob', name: 'Bob' })
    await waitFor(() => alice.peers.length === 1, { what: 'Alice to see Bob' })
    const ended = nextEvent(alice, (e) => e.type === 'call-ended', { what: 'call-ended' })
    bob.send({ type: 1, to: alice.peerId, sdp: { type: 'offer', sdp: 'v=0\r\n' } })
    await nextEvent(alice, (e) => e.type === 'call-incoming')
    bob.close()
    assert.equal((await ended).reason, 'peer-left')
  })

  test('call() to a peer not in the room rejects with unknown-peer', async () => {
    const alice = client({ room: freshRoom(), name: 'Alice' })
    await alice.connect()
    await assert.rejects(alice.call('nobody', { video: false, audio: false }), { code: 'unknown-peer' })
  })
})

describe('reconnecting', () => {
  test('after a dropped socket the client announces again with the same id and secret; the others see nothing', async () => {
    const proxy = await startProxy(kraken.port)
    cleanups.push(() => proxy.close())
    const room = freshRoom()
    const sent = []
    class RecordingWebSocket extends WebSocket {
      send(data, ...rest) {
        if (typeof data === 'string') {
          sent.push(JSON.parse(data))
        }
        return super.send(data, ...rest)
      }
    }
    const alice = client({ room, name: 'Alice', url: proxy.url, WebSocket: RecordingWebSocket })
    await alice.connect()
    const bob = await rawPeer(room, { peerId: 'bob', name: 'Bob' })
    await waitFor(() => alice.peers.length === 1, { what: 'Alice to see Bob' })
    const events = record(alice)

    proxy.drop()
    await waitFor(() => events.some((e) => e.type === 'status' && e.status === 'disconnected'), {
      what: 'the drop',
    })
    await waitFor(() => alice.status === 'connected', { what: 'the reconnect' })
    // The old socket was still open on the server when the new one announced
    // (a different secret would have been refused with peer-id-taken); the
    // takeover then closes it.
    assert.equal(proxy.openUpstreams, 2)
    await waitFor(() => proxy.openUpstreams === 1, { what: 'the server to close the old socket' })
    const announces = sent.filter((m) => m.signal.type === 0).map((m) => m.signal)
    assert.equal(announces.length, 2)
    assert.deepEqual(announces[1], announces[0], 'the same id, name and secret')
    assert.equal(announces[0].from, alice.peerId)
    assert.ok(announces[0].secret.length >= 32)
    assert.deepEqual(
      events.filter((e) => e.type === 'status').map((e) => e.status),
      ['disconnected', 'connecting', 'connected'],
    )
    assert.equal(events.filter((e) => e.type === 'error').length, 0, JSON.stringify(events))
    assert.deepEqual(alice.peers.map((p) => p.peerId), ['bob'])

    // A later arrival orders Bob's messages: any PeerLeft or PeerJoined for
    // Alice would have come before this PeerJoined.
    await rawPeer(room, { peerId: 'carol' })
    await waitFor(() => bob.signals().some((s) => s.type === 6 && s.peer.peerId === 'carol'), {
      what: 'Carol to join',
    })
    const aboutAlice = bob.signals().filter((s) => s.peer?.peerId === alice.peerId)
    assert.deepEqual(aboutAlice, [], 'Bob saw no PeerLeft or PeerJoined of Alice')

    // Signals reach Alice on her new socket.
    const incoming = nextEvent(alice, (e) => e.type === 'call-incoming', { what: 'call-incoming' })
    bob.send({ type: 1, to: alice.peerId, sdp: { type: 'offer', sdp: 'v=0\r\n' } })
    assert.equal((await incoming).from.peerId, 'bob')
  })

  test('a socket that hears nothing is replaced (keepalive), and the id is taken over', async () => {
    const proxy = await startProxy(kraken.port)
    cleanups.push(() => proxy.close())
    const room = freshRoom()
    const alice = client({ room, name: 'Alice', url: proxy.url, keepaliveMs: 150 })
    await alice.connect()
    const bob = await rawPeer(room, { peerId: 'bob' })
    await waitFor(() => alice.peers.length === 1, { what: 'Alice to see Bob' })

    // Keepalive announces are answered with peer lists and change nothing for Bob.
    const listsBefore = kraken.log.length
    await new Promise((resolve) => setTimeout(resolve, 500))
    assert.equal(alice.status, 'connected')
    assert.equal(kraken.log.slice(listsBefore).includes('Signal refused'), false)

    const events = record(alice)
    proxy.freeze()
    await waitFor(() => events.some((e) => e.type === 'status' && e.status === 'connected'), {
      what: 'the reconnect',
      timeoutMs: 5000,
    })
    assert.equal(proxy.openUpstreams, 2)
    await waitFor(() => proxy.openUpstreams === 1, { what: 'the server to close the old socket' })
    await rawPeer(room, { peerId: 'carol' })
    await waitFor(() => bob.signals().some((s) => s.type === 6 && s.peer.peerId === 'carol'), {
      what: 'Carol to join',
    })
    assert.deepEqual(bob.signals().filter((s) => s.peer?.peerId === alice.peerId), [])
  })

  test('an id that another peer holds is refused with peer-id-taken; connect() rejects', async () => {
    const room = freshRoom()
    const first = client({ room, name: 'One', peerId: 'same-id' })
    await first.connect()
    const second = client({ room, name: 'Two', peerId: 'same-id' })
    const events = record(second)
    await assert.rejects(second.connect(), { code: 'peer-id-taken' })
    assert.equal(events.find((e) => e.type === 'error').error.code, 'peer-id-taken')
    assert.equal(second.status, 'disconnected')
    assert.equal(first.status, 'connected')
  })
})

describe('errors', () => {
  test('a replaced app token closes with 4401: an error event, and no reconnect', async () => {
    const appToken = await kraken.registerApp('js-token-replaced')
    const alice = new KrakenClient({ url: kraken.wsUrl, token: appToken, room: freshRoom(), name: 'A', WebSocket })
    cleanups.push(() => alice.destroy())
    await alice.connect()
    const events = record(alice)
    const response = await fetch(`${kraken.httpUrl}/api/apps/js-token-replaced/token`, {
      method: 'POST',
      headers: { Authorization: 'Bearer test-admin-token-0123456789' },
      signal: AbortSignal.timeout(10000),
    })
    assert.equal(response.status, 200)
    const error = await waitFor(() => events.find((e) => e.type === 'error'), { what: 'the error event' })
    assert.equal(error.error.code, 'token-replaced')
    assert.match(error.error.message, /4401/)
    assert.equal(alice.status, 'disconnected')
    await new Promise((resolve) => setTimeout(resolve, 400))
    assert.deepEqual(
      events.filter((e) => e.type === 'status').map((e) => e.status),
      ['disconnected'],
      'no reconnect after a 44xx close',
    )
  })

  test('a refused handshake (wrong token) gives one connection-failed error and keeps retrying', async () => {
    let attempts = 0
    class CountingWebSocket extends WebSocket {
      constructor(...args) {
        super(...args)
        attempts += 1
      }
    }
    const alice = new KrakenClient({
      url: kraken.wsUrl,
      token: 'wrong-token',
      room: freshRoom(),
      name: 'A',
      WebSocket: CountingWebSocket,
      maxBackoffMs: 100,
    })
    cleanups.push(() => alice.destroy())
    const events = record(alice)
    const connecting = alice.connect()
    connecting.catch(() => undefined)
    await waitFor(() => attempts >= 4, { what: 'four attempts' })
    assert.equal(alice.status, 'connecting')
    alice.disconnect()
    await assert.rejects(connecting, { code: 'disconnected' })
    const errors = events.filter((e) => e.type === 'error')
    assert.equal(errors.length, 1, 'one error for a run of failed attempts')
    assert.equal(errors[0].error.code, 'connection-failed')
    assert.equal(alice.status, 'disconnected')
  })

  test('an Announce the server refuses rejects connect() with the server code', async () => {
    const alice = client({ room: freshRoom(), name: 'A', meta: { blob: 'x'.repeat(2000) } })
    const events = record(alice)
    await assert.rejects(alice.connect(), { code: 'bad-envelope' })
    const error = events.find((e) => e.type === 'error')
    assert.equal(error.error.code, 'bad-envelope')
    assert.match(error.error.message, /meta/)
    assert.equal(alice.status, 'disconnected')
  })
})

describe('binary frames', () => {
  test('are ignored without a doc, while documents change in the same room', async () => {
    const room = freshRoom()
    let binaries = 0
    class CountingWebSocket extends WebSocket {
      constructor(...args) {
        super(...args)
        this.on('message', (_data, isBinary) => {
          if (isBinary) {
            binaries += 1
          }
        })
      }
    }
    const signalingOnly = client({ room, name: 'S', WebSocket: CountingWebSocket })
    const events = record(signalingOnly)
    await signalingOnly.connect()

    const doc = newDoc()
    const writer = new SyncingClient({ url: kraken.wsUrl, token, room, name: 'W', doc, WebSocket })
    cleanups.push(() => writer.destroy())
    await writer.connect()
    await writer.whenSynced()
    doc.getText('t').insert(0, 'hello')

    await waitFor(() => binaries > 0, { what: 'a binary frame' })
    await waitFor(() => signalingOnly.peers.length === 1, { what: 'the writer as a peer' })
    assert.equal(signalingOnly.status, 'connected')
    assert.deepEqual(events.filter((e) => e.type === 'error'), [])
  })
})

describe('document sync', () => {
  test('two clients with docs converge, with a stock WebsocketProvider in the room', async () => {
    const room = freshRoom()
    const docA = newDoc()
    const docB = newDoc()
    const a = new SyncingClient({ url: kraken.wsUrl, token, room, name: 'A', doc: docA, WebSocket })
    const b = new SyncingClient({ url: kraken.wsUrl, token, room, name: 'B', doc: docB, WebSocket })
    cleanups.push(() => a.destroy(), () => b.destroy())
    await Promise.all([a.connect(), b.connect()])
    await Promise.all([a.whenSynced(), b.whenSynced()])
    assert.equal(a.synced, true)

    docA.getText('t').insert(0, 'Hello')
    await waitFor(() => docB.getText('t').toString() === 'Hello', { what: 'B to see A' })
    docB.getText('t').insert(5, ', world')
    await waitFor(() => docA.getText('t').toString() === 'Hello, world', { what: 'A to see B' })

    const docC = newDoc()
    const stock = new WebsocketProvider(kraken.wsUrl, room, docC, {
      disableBc: true,
      params: { token },
      WebSocketPolyfill: WebSocket,
    })
    cleanups.push(() => stock.destroy())
    await waitFor(() => docC.getText('t').toString() === 'Hello, world', { what: 'the stock client to sync' })
    docC.getText('t').insert(0, '> ')
    await waitFor(() => docA.getText('t').toString() === '> Hello, world', { what: 'A to see the stock client' })
    await waitFor(() => docB.getText('t').toString() === '> Hello, world', { what: 'B to see the stock client' })

    // Awareness travels both ways between Kraken clients and stock clients.
    a.awareness.setLocalStateField('user', { name: 'A' })
    await waitFor(() => stock.awareness.getStates().get(docA.clientID)?.user?.name === 'A', {
      what: 'A awareness at the stock client',
    })
    stock.awareness.setLocalStateField('user', { name: 'C' })
    await waitFor(() => b.awareness.getStates().get(docC.clientID)?.user?.name === 'C', {
      what: 'stock awareness at B',
    })

    // Leaving removes A's awareness for the others.
    a.disconnect()
    await waitFor(() => !b.awareness.getStates().has(docA.clientID), { what: 'A awareness removed' })
  })

  test('edits made while disconnected are sent after the reconnect', async () => {
    const proxy = await startProxy(kraken.port)
    cleanups.push(() => proxy.close())
    const room = freshRoom()
    const docA = newDoc()
    const docB = newDoc()
    const a = new SyncingClient({ url: proxy.url, token, room, name: 'A', doc: docA, WebSocket })
    const b = new SyncingClient({ url: kraken.wsUrl, token, room, name: 'B', doc: docB, WebSocket })
    cleanups.push(() => a.destroy(), () => b.destroy())
    await Promise.all([a.connect(), b.connect()])
    await a.whenSynced()

    proxy.drop()
    await waitFor(() => a.status !== 'connected', { what: 'the drop' })
    docA.getText('t').insert(0, 'offline edit')
    await waitFor(() => docB.getText('t').toString() === 'offline edit', { what: 'the offline edit' })
  })
})
