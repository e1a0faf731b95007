/**
 * `KrakenClient`: one WebSocket to one Kraken room, for finding peers,
 * setting up WebRTC calls with them and, optionally, keeping a Yjs document
 * in sync.
 */

import { Call, type CallHost, KrakenError } from './call.js'
import type {
  AwarenessLike,
  CallEndReason,
  CallEstablished,
  KrakenClientOptions,
  KrakenErrorInfo,
  KrakenEvent,
  KrakenListener,
  MediaOptions,
  Peer,
  Status,
  YDocLike,
} from './types.js'
import {
  CLOSE_ERRORS,
  type Signal,
  SignalType,
  buildUrl,
  decodeServerMessage,
  encodeSignal,
  isPermanentClose,
  randomString,
  randomUuid,
} from './wire.js'

/** Public STUN servers, used unless `iceServers` is given. */
export const DEFAULT_ICE_SERVERS: RTCIceServer[] = [
  { urls: ['stun:stun.l.google.com:19302', 'stun:stun1.l.google.com:19302'] },
  { urls: 'stun:stun.cloudflare.com:3478' },
]

/** Signals per second the client allows itself (the server allows 50 by default). */
const SIGNAL_RATE = 40

/** Relayed signals kept while the socket is down; older ones are dropped. */
const OUTBOX_LIMIT = 500

/** How many ended call ids per client are remembered, to ignore their late signals. */
const ENDED_CALLS_KEPT = 64

/** Refusals of an Announce: the client stops instead of retrying. */
const ANNOUNCE_REFUSALS = new Set(['peer-id-taken', 'room-full', 'already-announced', 'bad-envelope'])

/** What a client needs of a document sync (see `@kraken/client/yjs`). */
export interface DocSyncLike {
  readonly synced: boolean
  readonly awareness: AwarenessLike
  opened(): void
  receive(frame: Uint8Array): void
  closed(): void
  leaving(): void
  destroy(): void
  whenSynced(): Promise<void>
}

/** Builds the document sync of a client; `yjsSync` from `@kraken/client/yjs`. */
export type SyncFactory = (
  doc: YDocLike,
  awareness: AwarenessLike | null | undefined,
  callbacks: { send(frame: Uint8Array): void; denied(reason: string): void },
) => DocSyncLike

export interface KrakenClientConfig extends KrakenClientOptions {
  /** Document sync support, needed with `doc`: `yjsSync` from `@kraken/client/yjs`. */
  sync?: SyncFactory
}

interface Pending {
  promise: Promise<Peer[]>
  resolve(peers: Peer[]): void
  reject(error: Error): void
}

const OPEN = 1

export class KrakenClient {
  /** This peer's id, kept across reconnects. */
  readonly peerId: string
  readonly room: string
  readonly name: string
  /** The socket URL, built as `WebsocketProvider` builds it. */
  readonly url: string

  private readonly options: KrakenClientConfig
  private readonly secret: string
  private readonly iceServers: RTCIceServer[]
  private readonly WebSocketClass: NonNullable<KrakenClientOptions['WebSocket']>
  private readonly listeners = new Set<KrakenListener>()
  private readonly peerMap = new Map<string, Peer>()
  private readonly calls = new Map<string, Call>()
  private readonly endedCalls: string[] = []
  private readonly docSync: DocSyncLike | null = null

  private ws: WebSocket | null = null
  private currentStatus: Status = 'disconnected'
  private shouldConnect = false
  private announced = false
  private everAnnounced = false
  private failedAttempts = 0
  private failureReported = false
  private lastMessageAt = 0
  private lastAnnounceAt = 0
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null
  private keepaliveTimer: ReturnType<typeof setInterval> | null = null
  private pumpTimer: ReturnType<typeof setTimeout> | null = null
  private pending: Pending | null = null
  private outbox: string[] = []
  private tokens = SIGNAL_RATE
  private tokensAt = Date.now()
  private pageHideListening = false

  constructor(options: KrakenClientConfig) {
    for (const field of ['url', 'token', 'room', 'name'] as const) {
      if (typeof options[field] !== 'string') {
        throw new TypeError(`KrakenClient: "${field}" must be a string.`)
      }
    }
    if (options.secret !== undefined && (options.secret.length < 16 || options.secret.length > 128)) {
      throw new TypeError('KrakenClient: "secret" must be 16 to 128 characters.')
    }
    const WebSocketClass = options.WebSocket ?? (globalThis.WebSocket as KrakenClientOptions['WebSocket'])
    if (!WebSocketClass) {
      throw new TypeError('KrakenClient: no global WebSocket; pass one as the "WebSocket" option (e.g. from "ws").')
    }
    this.options = options
    this.WebSocketClass = WebSocketClass
    this.peerId = options.peerId ?? randomUuid()
    this.room = options.room
    this.name = options.name
    this.secret = options.secret ?? randomString(32)
    this.iceServers = options.iceServers ?? DEFAULT_ICE_SERVERS
    this.url = buildUrl(options.url, options.room, options.token)

    if (options.doc) {
      if (!options.sync) {
        throw new TypeError(
          'KrakenClient: to sync a doc, import KrakenClient from "@kraken/client/yjs" ' +
            '(or pass sync: yjsSync from there); it needs yjs and y-protocols.',
        )
      }
      this.docSync = options.sync(options.doc, options.awareness, {
        send: (frame) => this.sendBinary(frame),
        denied: (reason) => this.emitError('permission-denied', `Permission denied: ${reason}`),
      })
    }
  }

  // Public API

  /** The socket's state. */
  get status(): Status {
    return this.currentStatus
  }

  /** Every other announced peer of the room, as last heard. */
  get peers(): Peer[] {
    return Array.from(this.peerMap.values())
  }

  /** The awareness of the synced document (`null` without `doc`). */
  get awareness(): AwarenessLike | null {
    return this.docSync?.awareness ?? null
  }

  /** Whether the document has received the server's state on this connection. */
  get synced(): boolean {
    return this.docSync?.synced ?? false
  }

  /** Resolves once the document is synced with the server. */
  whenSynced(): Promise<void> {
    if (!this.docSync) {
      return Promise.reject(new KrakenError('no-doc', 'This client has no doc.'))
    }
    return this.docSync.whenSynced()
  }

  /** The peers this client is in a call with (or ringing), by id. */
  get activeCalls(): string[] {
    return Array.from(this.calls.keys())
  }

  /** Listen to every event; returns the function that stops listening. */
  on(listener: KrakenListener): () => void {
    this.listeners.add(listener)
    return () => {
      this.listeners.delete(listener)
    }
  }

  /**
   * Open the socket and announce this peer; resolves with the other peers
   * once the first peer list arrives. Retries with backoff while the server
   * cannot be reached; rejects if the server refuses the peer for good.
   */
  connect(): Promise<Peer[]> {
    if (this.announced) {
      return Promise.resolve(this.peers)
    }
    if (!this.pending) {
      let resolve!: (peers: Peer[]) => void
      let reject!: (error: Error) => void
      const promise = new Promise<Peer[]>((res, rej) => {
        resolve = res
        reject = rej
      })
      this.pending = { promise, resolve, reject }
    }
    const { promise } = this.pending
    if (!this.shouldConnect) {
      this.shouldConnect = true
      this.listenForPageHide(true)
      this.open()
    }
    return promise
  }

  /**
   * Call a peer; resolves when the call is established. Sends audio and
   * video unless told otherwise. Calling a peer that is calling this one
   * answers its call.
   */
  call(peerId: string, media: MediaOptions = { video: true, audio: true }): Promise<CallEstablished> {
    const existing = this.calls.get(peerId)
    if (existing) {
      if (existing.state === 'incoming') {
        return this.accept(existing, media)
      }
      return existing.done.promise
    }
    const peer = this.peerMap.get(peerId)
    if (!peer) {
      return Promise.reject(new KrakenError('unknown-peer', `No peer ${peerId} in this room.`))
    }
    if (peerId === this.peerId) {
      return Promise.reject(new KrakenError('unknown-peer', 'A peer cannot call itself.'))
    }
    const call = this.newCall(peer, 'connecting')
    call.start(media).catch((error: unknown) => this.callFailed(call, error))
    return call.done.promise
  }

  /** End the call with one peer, or every call. */
  hangup(peerId?: string): void {
    const calls = peerId === undefined ? Array.from(this.calls.values()) : [this.calls.get(peerId)]
    for (const call of calls) {
      if (call) {
        this.endCall(call, 'hangup', true)
      }
    }
  }

  /** Hang up every call and close the socket; `connect()` opens it again. */
  disconnect(): void {
    this.hangup()
    this.shouldConnect = false
    this.listenForPageHide(false)
    this.clearTimers()
    this.outbox = []
    const pending = this.pending
    this.pending = null
    pending?.reject(new KrakenError('disconnected', 'disconnect() was called.'))

    const ws = this.ws
    if (ws) {
      if (ws.readyState === OPEN) {
        this.docSync?.leaving()
      }
      this.detach(ws)
      ws.close(1000)
    }
    this.socketGone()
  }

  /** `disconnect()`, and stop listening to the document; the client is done. */
  destroy(): void {
    this.disconnect()
    this.docSync?.destroy()
    this.listeners.clear()
  }

  // The socket

  private open(): void {
    this.reconnectTimer = null
    if (!this.shouldConnect || this.ws) {
      return
    }
    this.setStatus('connecting')
    let ws: WebSocket
    try {
      ws = new this.WebSocketClass(this.url)
    } catch (error) {
      this.stop(new KrakenError('bad-url', `Cannot open ${this.url}: ${String(error)}`))
      return
    }
    ws.binaryType = 'arraybuffer'
    this.ws = ws
    ws.onopen = () => this.opened(ws)
    ws.onmessage = (event) => this.received(ws, event)
    ws.onclose = (event) => this.closed(ws, event.code, event.reason)
    ws.onerror = () => undefined
  }

  private opened(ws: WebSocket): void {
    if (ws !== this.ws) {
      return
    }
    this.lastMessageAt = Date.now()
    this.announce()
    this.docSync?.opened()
    const interval = Math.max(50, Math.floor(this.keepaliveMs / 5))
    this.keepaliveTimer = setInterval(() => this.keepalive(), interval)
  }

  private get keepaliveMs(): number {
    return this.options.keepaliveMs ?? 15000
  }

  private announce(): void {
    const signal: Signal = {
      type: SignalType.Announce,
      from: this.peerId,
      name: this.name,
      secret: this.secret,
    }
    if (this.options.meta) {
      signal.meta = this.options.meta
    }
    this.lastAnnounceAt = Date.now()
    this.sendText(encodeSignal(signal))
  }

  /** Re-announce now and then (the answer is a peer list); replace a silent socket. */
  private keepalive(): void {
    const ws = this.ws
    if (!ws || ws.readyState !== OPEN) {
      return
    }
    const now = Date.now()
    if (now - this.lastMessageAt > 2 * this.keepaliveMs) {
      // Nothing heard for too long: the socket is dead even if it does not
      // know it yet. The server will notice later, or see this peer take its
      // id over on the next socket.
      this.closed(ws, 4000, 'no answer')
      const terminate = (ws as { terminate?: () => void }).terminate
      if (typeof terminate === 'function') {
        // Node's ws would otherwise wait 30 s for a close handshake that cannot come.
        terminate.call(ws)
      } else {
        ws.close(4000, 'no answer')
      }
      return
    }
    if (this.announced && now - this.lastAnnounceAt >= this.keepaliveMs) {
      this.announce()
    }
  }

  private received(ws: WebSocket, event: MessageEvent): void {
    if (ws !== this.ws) {
      return
    }
    this.lastMessageAt = Date.now()
    const data: unknown = event.data
    if (typeof data === 'string') {
      const message = decodeServerMessage(data)
      if (message?.kind === 'signal') {
        this.signalReceived(message.signal)
      } else if (message?.kind === 'error') {
        this.serverError(message.error)
      }
      return
    }
    if (!this.docSync) {
      return
    }
    const frame =
      data instanceof ArrayBuffer
        ? new Uint8Array(data)
        : ArrayBuffer.isView(data)
          ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
          : null
    if (!frame) {
      return
    }
    try {
      this.docSync.receive(frame)
    } catch (error) {
      this.emitError('sync-failed', `Could not apply a sync message: ${String(error)}`)
    }
  }

  private closed(ws: WebSocket, code: number, reason: string): void {
    if (ws !== this.ws) {
      return
    }
    this.detach(ws)
    const wasAnnounced = this.announced
    this.socketGone(wasAnnounced || !this.shouldConnect)
    if (!this.shouldConnect) {
      return
    }
    if (isPermanentClose(code)) {
      const errorCode = CLOSE_ERRORS[code] ?? 'closed'
      this.stop(new KrakenError(errorCode, `The server closed the connection for good (${code}${reason ? `: ${reason}` : ''}).`))
      return
    }
    if (!wasAnnounced && !this.failureReported) {
      this.failureReported = true
      this.emitError('connection-failed', `Could not reach ${this.options.url} (close ${code}); retrying.`)
    }
    this.failedAttempts += 1
    const delay = Math.min(100 * 2 ** this.failedAttempts, this.options.maxBackoffMs ?? 2500)
    this.reconnectTimer = setTimeout(() => this.open(), delay)
  }

  private detach(ws: WebSocket): void {
    ws.onopen = null
    ws.onmessage = null
    ws.onclose = null
    // Closing a socket that is still connecting makes Node's `ws` report an
    // error; with no handler that error would be thrown. Ignore it: the
    // socket is already given up.
    ws.onerror = () => undefined
    if (this.ws === ws) {
      this.ws = null
    }
  }

  /** The socket is gone (calls stay up): forget what belonged to it. */
  private socketGone(reportDisconnected = true): void {
    this.ws = null
    this.announced = false
    if (this.keepaliveTimer) {
      clearInterval(this.keepaliveTimer)
      this.keepaliveTimer = null
    }
    this.docSync?.closed()
    if (reportDisconnected) {
      this.setStatus('disconnected')
    }
  }

  /** Give up: the server refused this peer for good. */
  private stop(error: KrakenError): void {
    this.shouldConnect = false
    this.listenForPageHide(false)
    this.clearTimers()
    const ws = this.ws
    if (ws) {
      this.detach(ws)
      ws.close(1000)
    }
    this.socketGone()
    this.emitError(error.code, error.message)
    const pending = this.pending
    this.pending = null
    pending?.reject(error)
  }

  private clearTimers(): void {
    for (const timer of [this.reconnectTimer, this.pumpTimer]) {
      if (timer) {
        clearTimeout(timer)
      }
    }
    if (this.keepaliveTimer) {
      clearInterval(this.keepaliveTimer)
    }
    this.reconnectTimer = null
    this.pumpTimer = null
    this.keepaliveTimer = null
  }

  private sendText(text: string): void {
    const ws = this.ws
    if (ws && ws.readyState === OPEN) {
      this.spendToken()
      ws.send(text)
    }
  }

  private sendBinary(frame: Uint8Array): void {
    const ws = this.ws
    if (ws && ws.readyState === OPEN) {
      ws.send(frame)
    }
  }

  /** Queue a signal for a peer; it goes out once announced, at a pace the server accepts. */
  private relay(signal: Signal): void {
    this.outbox.push(encodeSignal(signal))
    if (this.outbox.length > OUTBOX_LIMIT) {
      this.outbox.shift()
    }
    this.pump()
  }

  private refillTokens(): void {
    const now = Date.now()
    this.tokens = Math.min(SIGNAL_RATE, this.tokens + ((now - this.tokensAt) * SIGNAL_RATE) / 1000)
    this.tokensAt = now
  }

  private spendToken(): void {
    this.refillTokens()
    this.tokens -= 1
  }

  private pump(): void {
    const ws = this.ws
    if (this.pumpTimer || !ws || ws.readyState !== OPEN || !this.announced) {
      return
    }
    this.refillTokens()
    while (this.outbox.length > 0 && this.tokens >= 1) {
      this.tokens -= 1
      ws.send(this.outbox.shift()!)
    }
    if (this.outbox.length > 0) {
      const wait = Math.ceil(((1 - this.tokens) * 1000) / SIGNAL_RATE)
      this.pumpTimer = setTimeout(() => {
        this.pumpTimer = null
        this.pump()
      }, wait)
    }
  }

  // Signals from the server

  private signalReceived(signal: Signal): void {
    switch (signal.type) {
      case SignalType.PeerList:
        this.peerListReceived(Array.isArray(signal.peers) ? (signal.peers as Peer[]) : [])
        break
      case SignalType.PeerJoined:
        if (isPeer(signal.peer)) {
          this.peerJoined(signal.peer)
        }
        break
      case SignalType.PeerLeft:
        if (isPeer(signal.peer)) {
          this.peerLeft(signal.peer)
        }
        break
      case SignalType.Offer:
      case SignalType.Answer:
      case SignalType.IceCandidate:
      case SignalType.Hangup:
        this.callSignalReceived(signal)
        break
      default:
        break
    }
  }

  private peerListReceived(list: Peer[]): void {
    const first = !this.announced
    const fresh = new Map(list.filter(isPeer).filter((p) => p.peerId !== this.peerId).map((p) => [p.peerId, p]))
    const hadList = this.everAnnounced
    const gone = Array.from(this.peerMap.values()).filter((peer) => !fresh.has(peer.peerId))
    const added = Array.from(fresh.values()).filter((peer) => !this.peerMap.has(peer.peerId))
    this.peerMap.clear()
    for (const [id, peer] of fresh) {
      this.peerMap.set(id, peer)
    }

    if (first) {
      this.announced = true
      this.everAnnounced = true
      this.failedAttempts = 0
      this.failureReported = false
      this.setStatus('connected')
    }
    if (hadList) {
      for (const peer of gone) {
        this.emit({ type: 'peer-left', peer })
        this.peerGone(peer.peerId)
      }
      for (const peer of added) {
        this.emit({ type: 'peer-joined', peer })
      }
    }
    for (const peer of fresh.values()) {
      this.peerBack(peer)
    }
    if (first || gone.length > 0 || added.length > 0) {
      this.emit({ type: 'peers', peers: this.peers })
    }
    if (first) {
      const pending = this.pending
      this.pending = null
      pending?.resolve(this.peers)
      this.pump()
    }
  }

  private peerJoined(peer: Peer): void {
    if (peer.peerId === this.peerId) {
      return
    }
    const known = this.peerMap.has(peer.peerId)
    this.peerMap.set(peer.peerId, peer)
    this.peerBack(peer)
    if (!known) {
      this.emit({ type: 'peer-joined', peer })
    }
    this.emit({ type: 'peers', peers: this.peers })
  }

  private peerLeft(peer: Peer): void {
    if (!this.peerMap.delete(peer.peerId)) {
      return
    }
    this.emit({ type: 'peer-left', peer })
    this.emit({ type: 'peers', peers: this.peers })
    this.peerGone(peer.peerId)
  }

  /** A peer's signaling socket is gone: end its call, after a grace period if media still flow. */
  private peerGone(peerId: string): void {
    const call = this.calls.get(peerId)
    if (!call) {
      return
    }
    const grace = this.options.peerLeftGraceMs ?? 5000
    if (call.state === 'established' && call.mediaConnected && grace > 0) {
      if (!call.graceTimer) {
        call.graceTimer = setTimeout(() => this.endCall(call, 'peer-left', false), grace)
      }
      return
    }
    this.endCall(call, 'peer-left', false)
  }

  private peerBack(peer: Peer): void {
    const call = this.calls.get(peer.peerId)
    if (call) {
      call.peer = peer
      if (call.graceTimer) {
        clearTimeout(call.graceTimer)
        call.graceTimer = null
      }
    }
  }

  private serverError(error: KrakenErrorInfo): void {
    if (!this.announced && ANNOUNCE_REFUSALS.has(error.code)) {
      this.stop(new KrakenError(error.code, error.message))
      return
    }
    this.emit({ type: 'error', error })
  }

  // Calls

  private readonly callHost: CallHost = {
    iceServers: [],
    send: (call, signal) => {
      if (!call.ended) {
        this.relay({ ...signal, to: call.peer.peerId, callId: call.id })
      }
    },
    established: (call) => {
      this.emit({
        type: 'call-established',
        peer: call.peer,
        remoteStream: call.remoteStream!,
        localStream: call.localStream,
      })
    },
    end: (call, reason, notifyPeer) => this.endCall(call, reason, notifyPeer),
    error: (code, message) => this.emitError(code, message),
  }

  private newCall(peer: Peer, state: 'incoming' | 'connecting', id?: string): Call {
    const host: CallHost = { ...this.callHost, iceServers: this.iceServers }
    const call = new Call(host, peer, this.peerId > peer.peerId, state, id)
    this.calls.set(peer.peerId, call)
    const timeout = this.options.callTimeoutMs ?? 60000
    if (timeout > 0) {
      call.timeoutTimer = setTimeout(() => {
        if (call.state !== 'established') {
          this.endCall(call, 'failed', true)
        }
      }, timeout)
    }
    return call
  }

  private accept(call: Call, media: MediaOptions): Promise<CallEstablished> {
    call.accept(media).catch((error: unknown) => this.callFailed(call, error))
    return call.done.promise
  }

  private callFailed(call: Call, error: unknown): void {
    if (call.ended) {
      return
    }
    const code = error instanceof KrakenError ? error.code : 'call-failed'
    this.emitError(code, error instanceof Error ? error.message : String(error))
    call.done.reject(error instanceof Error ? error : new KrakenError(code, String(error)))
    this.endCall(call, 'failed', true)
  }

  private endCall(call: Call, reason: CallEndReason, notifyPeer: boolean): void {
    if (call.ended) {
      return
    }
    if (notifyPeer) {
      this.relay({ type: SignalType.Hangup, to: call.peer.peerId, callId: call.id, reason })
    }
    call.close()
    if (this.calls.get(call.peer.peerId) === call) {
      this.calls.delete(call.peer.peerId)
    }
    this.endedCalls.push(...call.ids)
    this.endedCalls.splice(0, Math.max(0, this.endedCalls.length - ENDED_CALLS_KEPT))
    call.done.reject(new KrakenError(`call-${reason}`, `The call ended (${reason}).`))
    this.emit({ type: 'call-ended', peer: call.peer, reason })
  }

  private callSignalReceived(signal: Signal): void {
    const from = signal.from
    if (typeof from !== 'string' || from === this.peerId) {
      return
    }
    const callId = typeof signal.callId === 'string' ? signal.callId : undefined
    let call = this.calls.get(from)

    if (signal.type === SignalType.Hangup) {
      if (call && (callId === undefined || call.ids.has(callId))) {
        const reason = signal.reason === 'rejected' || signal.reason === 'failed' ? signal.reason : 'hangup'
        this.endCall(call, reason, false)
      }
      return
    }

    if (signal.type === SignalType.Offer) {
      const sdp = signal.sdp as RTCSessionDescriptionInit | undefined
      if (!sdp || typeof sdp !== 'object') {
        return
      }
      if (callId !== undefined && this.endedCalls.includes(callId)) {
        return
      }
      if (call && callId !== undefined && !call.ids.has(callId) && call.state === 'established') {
        // The peer started a new call; it no longer has the old one.
        this.endCall(call, 'hangup', false)
        call = undefined
      }
      if (!call) {
        this.incomingCall(from, sdp, callId)
        return
      }
      call.offerReceived(sdp, callId)
      return
    }

    if (!call) {
      return
    }
    if (signal.type === SignalType.Answer) {
      const sdp = signal.sdp as RTCSessionDescriptionInit | undefined
      if (sdp && typeof sdp === 'object') {
        call.answerReceived(sdp)
      }
    } else if (signal.type === SignalType.IceCandidate) {
      const candidate = signal.candidate as RTCIceCandidateInit | undefined
      if (candidate && typeof candidate === 'object') {
        call.candidateReceived(candidate, callId)
      }
    }
  }

  private incomingCall(from: string, sdp: RTCSessionDescriptionInit, callId: string | undefined): void {
    const peer = this.peerMap.get(from) ?? { peerId: from, name: '', meta: null }
    const call = this.newCall(peer, 'incoming', callId)
    call.offerReceived(sdp)
    this.emit({
      type: 'call-incoming',
      from: peer,
      accept: (media: MediaOptions = { video: true, audio: true }) => this.accept(call, media),
      reject: () => this.endCall(call, 'rejected', true),
    })
  }

  // Events

  private setStatus(status: Status): void {
    if (status !== this.currentStatus) {
      this.currentStatus = status
      this.emit({ type: 'status', status })
    }
  }

  private emitError(code: string, message: string): void {
    this.emit({ type: 'error', error: { code, message } })
  }

  private emit(event: KrakenEvent): void {
    for (const listener of Array.from(this.listeners)) {
      try {
        listener(event)
      } catch (error) {
        // One broken listener must not stop the others or the client.
        setTimeout(() => {
          throw error
        }, 0)
      }
    }
  }

  // Leaving the page

  private readonly onPageHide = (): void => {
    // Tell call partners now; the socket closes with the page.
    for (const call of Array.from(this.calls.values())) {
      const ws = this.ws
      if (ws && ws.readyState === OPEN && this.announced) {
        ws.send(
          encodeSignal({ type: SignalType.Hangup, to: call.peer.peerId, callId: call.id, reason: 'hangup' }),
        )
      }
    }
  }

  private listenForPageHide(on: boolean): void {
    const target = globalThis as { addEventListener?: Window['addEventListener']; removeEventListener?: Window['removeEventListener'] }
    if (!target.addEventListener || !target.removeEventListener || on === this.pageHideListening) {
      return
    }
    this.pageHideListening = on
    if (on) {
      target.addEventListener('pagehide', this.onPageHide)
    } else {
      target.removeEventListener('pagehide', this.onPageHide)
    }
  }
}

function isPeer(value: unknown): value is Peer {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Peer).peerId === 'string' &&
    typeof (value as Peer).name === 'string'
  )
}

export { KrakenError }
