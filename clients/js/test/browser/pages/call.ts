// A page that drives KrakenClient for the browser tests: its configuration
// comes from the query string, and `window.test` lets the test runner act
// and look.

import { KrakenClient, type CallIncomingEvent, type KrakenEvent } from '@kraken/client'

const params = new URLSearchParams(location.search)
const autoAccept = params.get('accept') === 'auto'

const client = new KrakenClient({
  url: params.get('url')!,
  token: params.get('token')!,
  room: params.get('room') ?? 'calls',
  name: params.get('name') ?? 'tester',
  peerId: params.get('peerId') ?? undefined,
  iceServers: [],
})

const events: Array<Record<string, unknown>> = []
const ringing = new Map<string, CallIncomingEvent>()
const setupMs: number[] = []

const peerList = document.getElementById('peers')!
const videos = document.getElementById('videos')!
document.getElementById('me')!.textContent = `${client.name} (${client.peerId})`

function summarise(event: KrakenEvent): Record<string, unknown> {
  switch (event.type) {
    case 'status':
      return { type: event.type, status: event.status }
    case 'peers':
      return { type: event.type, peers: event.peers.map((p) => p.peerId) }
    case 'peer-joined':
    case 'peer-left':
      return { type: event.type, peer: event.peer.peerId }
    case 'call-incoming':
      return { type: event.type, from: event.from.peerId, name: event.from.name }
    case 'call-established':
      return { type: event.type, peer: event.peer.peerId, tracks: event.remoteStream.getTracks().length }
    case 'call-ended':
      return { type: event.type, peer: event.peer.peerId, reason: event.reason }
    case 'error':
      return { type: event.type, code: event.error.code, message: event.error.message }
  }
}

client.on((event) => {
  events.push({ ...summarise(event), at: performance.now() })
  if (event.type === 'status') {
    document.getElementById('status')!.textContent = event.status
  } else if (event.type === 'peers') {
    peerList.replaceChildren(
      ...event.peers.map((peer) => {
        const item = document.createElement('li')
        item.dataset.peerId = peer.peerId
        item.textContent = peer.name
        return item
      }),
    )
  } else if (event.type === 'call-incoming') {
    ringing.set(event.from.peerId, event)
    if (autoAccept) {
      event.accept().catch(() => undefined)
    }
  } else if (event.type === 'call-established') {
    const video = document.createElement('video')
    video.dataset.peerId = event.peer.peerId
    video.autoplay = true
    video.muted = true
    video.playsInline = true
    video.srcObject = event.remoteStream
    videos.append(video)
  } else if (event.type === 'call-ended') {
    ringing.delete(event.peer.peerId)
    videos.querySelector(`video[data-peer-id="${CSS.escape(event.peer.peerId)}"]`)?.remove()
  }
})

const test = {
  client,
  events,
  setupMs,
  peerId: client.peerId,
  connected: client.connect().then((peers) => peers.map((p) => p.peerId)),
  /** Call a peer; resolves with the milliseconds from call() to established. */
  async call(peerId: string, media?: { video?: boolean; audio?: boolean }): Promise<number> {
    const started = performance.now()
    await client.call(peerId, media)
    const took = performance.now() - started
    setupMs.push(took)
    return took
  },
  async accept(peerId: string): Promise<void> {
    const call = ringing.get(peerId)
    if (!call) {
      throw new Error(`no call from ${peerId}`)
    }
    await call.accept()
  },
  reject(peerId: string): void {
    ringing.get(peerId)?.reject()
  },
  hangup(peerId?: string): void {
    client.hangup(peerId)
  },
  /** Close the signaling socket under the client, as a network drop would. */
  dropSocket(): void {
    ;(client as unknown as { ws: WebSocket }).ws.close()
  },
  of(type: string): Array<Record<string, unknown>> {
    return events.filter((event) => event.type === type)
  },
}

Object.assign(window, { test })
