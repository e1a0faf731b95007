/**
 * One WebRTC call with one peer: its RTCPeerConnection, media and
 * negotiation.
 *
 * Every call has a random call id that its signals carry. Two peers that
 * call each other at the same moment (glare) place two calls; the polite
 * peer, the one whose id is larger, drops its own peer connection and
 * answers the other's offer with a fresh one, and the impolite peer ignores
 * the polite peer's offer. A fresh connection avoids rolling back an offer
 * in flight, which can leave Chromium without ICE candidates.
 *
 * Later negotiations of a running call (a track added, say) follow the
 * "perfect negotiation" pattern, with offers and answers handled one at a
 * time: the polite peer rolls its own offer back, the impolite one ignores
 * the colliding offer.
 */

import type { CallEndReason, CallEstablished, MediaOptions, Peer } from './types.js'
import { SignalType, type Signal, randomString } from './wire.js'

export type CallState = 'incoming' | 'connecting' | 'established' | 'ended'

/** What a call needs from its client. */
export interface CallHost {
  readonly iceServers: RTCIceServer[]
  /** Send a relayed signal to the call's peer. */
  send(call: Call, signal: Signal): void
  established(call: Call): void
  /** End the call (the client removes it and tells the listeners). */
  end(call: Call, reason: CallEndReason, notifyPeer: boolean): void
  error(code: string, message: string): void
}

interface Deferred<T> {
  promise: Promise<T>
  resolve(value: T): void
  reject(error: Error): void
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void
  let reject!: (error: Error) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  // A call nobody awaits must not raise an unhandled rejection when it ends.
  promise.catch(() => undefined)
  return { promise, resolve, reject }
}

/** An error with a Kraken error code. */
export class KrakenError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message)
    this.name = 'KrakenError'
  }
}

async function openMedia(
  media: MediaOptions,
): Promise<{ stream: MediaStream | null; owned: boolean }> {
  if (media.stream) {
    return { stream: media.stream, owned: false }
  }
  const video = media.video ?? false
  const audio = media.audio ?? false
  if (!video && !audio) {
    return { stream: null, owned: false }
  }
  if (!globalThis.navigator?.mediaDevices?.getUserMedia) {
    throw new KrakenError('media-failed', 'getUserMedia is not available (a secure context is needed).')
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video, audio })
    return { stream, owned: true }
  } catch (error) {
    throw new KrakenError('media-failed', `Could not open camera or microphone: ${String(error)}`)
  }
}

export class Call {
  /** Every call id this call is known by (both, after glare). */
  readonly ids = new Set<string>()
  state: CallState
  pc: RTCPeerConnection | null = null
  localStream: MediaStream | null = null
  remoteStream: MediaStream | null = null
  graceTimer: ReturnType<typeof setTimeout> | null = null
  timeoutTimer: ReturnType<typeof setTimeout> | null = null
  readonly done = deferred<CallEstablished>()

  private sendId: string
  /** Ids of the peer's offers this side ignored in glare; their candidates are dropped. */
  private readonly ignoredIds = new Set<string>()
  private outgoing = false
  private ownsLocalStream = false
  private pendingOffer: RTCSessionDescriptionInit | null = null
  private pendingCandidates: RTCIceCandidateInit[] = []
  private ignoreOffer = false
  private accepting = false
  private queue: Promise<void> = Promise.resolve()

  constructor(
    private readonly host: CallHost,
    public peer: Peer,
    readonly polite: boolean,
    state: 'incoming' | 'connecting',
    id: string = randomString(12),
  ) {
    this.state = state
    this.ids.add(id)
    this.sendId = id
  }

  /** The call id this side puts on its signals. */
  get id(): string {
    return this.sendId
  }

  get ended(): boolean {
    return this.state === 'ended'
  }

  /** Whether media are flowing right now. */
  get mediaConnected(): boolean {
    const pc = this.pc
    if (!pc) {
      return false
    }
    if (pc.connectionState !== undefined) {
      return pc.connectionState === 'connected'
    }
    return pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed'
  }

  /** Place the call: open media, then the first negotiation sends the offer. */
  async start(media: MediaOptions): Promise<void> {
    this.outgoing = true
    await this.openLocalMedia(media)
    if (this.ended) {
      return
    }
    const pc = this.createPeerConnection()
    if (this.takePendingOffer()) {
      // The peer's offer came while the camera was opening: answer it.
      return
    }
    const kinds = new Set<string>()
    for (const track of this.localStream?.getTracks() ?? []) {
      pc.addTrack(track, this.localStream!)
      kinds.add(track.kind)
    }
    // Ask for the peer's audio and video even when sending neither.
    for (const kind of ['audio', 'video']) {
      if (!kinds.has(kind)) {
        pc.addTransceiver(kind, { direction: 'recvonly' })
      }
    }
  }

  /** Answer an incoming call. */
  async accept(media: MediaOptions): Promise<void> {
    if (this.state !== 'incoming' || this.accepting) {
      throw new KrakenError('not-ringing', `No incoming call from ${this.peer.peerId} to accept.`)
    }
    this.accepting = true
    await this.openLocalMedia(media)
    if (this.ended) {
      throw new KrakenError('call-ended', 'The call ended before it was accepted.')
    }
    this.state = 'connecting'
    this.createPeerConnection()
    this.takePendingOffer()
  }

  /**
   * An Offer arrived for this call. `callId` is the id it carries, when it
   * is not one of this call's: the peer placed a call of its own (glare).
   */
  offerReceived(description: RTCSessionDescriptionInit, callId?: string): void {
    if (callId !== undefined && !this.ids.has(callId)) {
      this.ids.add(callId)
      if (this.outgoing && this.state === 'connecting') {
        this.glare(description, callId)
        return
      }
    }
    if (!this.pc) {
      this.pendingOffer = description
      return
    }
    this.enqueue((pc) => this.acceptDescription(pc, description))
  }

  /** An Answer arrived for this call. */
  answerReceived(description: RTCSessionDescriptionInit): void {
    if (this.pc) {
      this.enqueue((pc) => this.acceptDescription(pc, description))
    }
  }

  /** An ICE candidate arrived for this call. */
  candidateReceived(candidate: RTCIceCandidateInit, callId?: string): void {
    if (callId !== undefined && this.ignoredIds.has(callId)) {
      return
    }
    const pc = this.pc
    if (!pc || !pc.remoteDescription) {
      this.pendingCandidates.push(candidate)
      return
    }
    this.enqueue((current) => this.addCandidate(current, candidate))
  }

  /** Tear everything down; the client tells the listeners. */
  close(): void {
    this.state = 'ended'
    for (const timer of [this.graceTimer, this.timeoutTimer]) {
      if (timer) {
        clearTimeout(timer)
      }
    }
    this.graceTimer = null
    this.timeoutTimer = null
    this.dropPeerConnection()
    if (this.ownsLocalStream) {
      for (const track of this.localStream?.getTracks() ?? []) {
        track.stop()
      }
    }
    for (const track of this.remoteStream?.getTracks() ?? []) {
      track.stop()
    }
    this.pendingCandidates = []
    this.pendingOffer = null
  }

  /** Both peers called each other: settle on the impolite peer's call. */
  private glare(description: RTCSessionDescriptionInit, callId: string): void {
    if (!this.polite) {
      this.ignoredIds.add(callId)
      return
    }
    this.sendId = callId
    this.pendingOffer = description
    this.pendingCandidates = []
    if (this.pc) {
      this.dropPeerConnection()
      this.createPeerConnection()
      this.takePendingOffer()
    }
  }

  /** Answer the offer that came before the peer connection existed, if any. */
  private takePendingOffer(): boolean {
    const offer = this.pendingOffer
    this.pendingOffer = null
    if (offer) {
      this.enqueue((pc) => this.acceptDescription(pc, offer))
    }
    return offer !== null
  }

  private async openLocalMedia(media: MediaOptions): Promise<void> {
    const { stream, owned } = await openMedia(media)
    if (this.ended && owned) {
      for (const track of stream?.getTracks() ?? []) {
        track.stop()
      }
      return
    }
    this.localStream = stream
    this.ownsLocalStream = owned
  }

  private createPeerConnection(): RTCPeerConnection {
    const pc = new RTCPeerConnection({ iceServers: this.host.iceServers })
    this.pc = pc
    this.queue = Promise.resolve()
    this.remoteStream = new MediaStream()

    pc.onnegotiationneeded = () => {
      this.enqueue((current) => this.negotiate(current))
    }
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && candidate.candidate && pc === this.pc) {
        this.host.send(this, {
          type: SignalType.IceCandidate,
          candidate: candidate.toJSON(),
        })
      }
    }
    pc.ontrack = ({ track }) => {
      const remote = this.remoteStream!
      if (!remote.getTracks().includes(track)) {
        remote.addTrack(track)
      }
    }
    pc.onconnectionstatechange = () => this.connectionChanged()
    if (pc.connectionState === undefined) {
      pc.oniceconnectionstatechange = () => this.connectionChanged()
    }
    return pc
  }

  private dropPeerConnection(): void {
    const pc = this.pc
    this.pc = null
    if (pc) {
      pc.onnegotiationneeded = null
      pc.onicecandidate = null
      pc.ontrack = null
      pc.onconnectionstatechange = null
      pc.oniceconnectionstatechange = null
      pc.close()
    }
  }

  private connectionChanged(): void {
    const pc = this.pc
    if (!pc || this.ended) {
      return
    }
    const state = pc.connectionState ?? pc.iceConnectionState
    if (this.mediaConnected) {
      if (this.state !== 'established') {
        this.state = 'established'
        if (this.timeoutTimer) {
          clearTimeout(this.timeoutTimer)
          this.timeoutTimer = null
        }
        this.host.established(this)
        this.done.resolve({
          peer: this.peer,
          remoteStream: this.remoteStream!,
          localStream: this.localStream,
        })
      }
      return
    }
    if (this.graceTimer && state !== 'connecting' && state !== 'new') {
      // The peer's signaling socket is gone and now the media are too.
      this.host.end(this, 'peer-left', false)
    } else if (state === 'failed') {
      this.host.end(this, 'failed', true)
    }
  }

  private async negotiate(pc: RTCPeerConnection): Promise<void> {
    if (pc.signalingState !== 'stable') {
      // The browser asks again once the current exchange is over, if needed.
      return
    }
    await pc.setLocalDescription()
    this.sendDescription(pc)
  }

  private sendDescription(pc: RTCPeerConnection): void {
    const description = pc.localDescription
    if (!description || this.ended || pc !== this.pc) {
      return
    }
    this.host.send(this, {
      type: description.type === 'offer' ? SignalType.Offer : SignalType.Answer,
      sdp: description.toJSON(),
    })
  }

  private async acceptDescription(
    pc: RTCPeerConnection,
    description: RTCSessionDescriptionInit,
  ): Promise<void> {
    const collision = description.type === 'offer' && pc.signalingState !== 'stable'
    this.ignoreOffer = !this.polite && collision
    if (this.ignoreOffer) {
      return
    }
    if (description.type === 'answer' && pc.signalingState !== 'have-local-offer') {
      return
    }
    await pc.setRemoteDescription(description)
    if (description.type === 'offer') {
      if (this.localStream && pc.getSenders().every((sender) => !sender.track)) {
        for (const track of this.localStream.getTracks()) {
          pc.addTrack(track, this.localStream)
        }
      }
      await pc.setLocalDescription()
      this.sendDescription(pc)
    }
    const candidates = this.pendingCandidates
    this.pendingCandidates = []
    for (const candidate of candidates) {
      await this.addCandidate(pc, candidate)
    }
  }

  private async addCandidate(pc: RTCPeerConnection, candidate: RTCIceCandidateInit): Promise<void> {
    try {
      await pc.addIceCandidate(candidate)
    } catch (error) {
      // Candidates of an offer this side ignored are expected to fail.
      if (!this.ignoreOffer && pc === this.pc && !this.ended) {
        this.host.error('bad-candidate', `Could not add an ICE candidate: ${String(error)}`)
      }
    }
  }

  /**
   * Run negotiation steps one at a time, on the peer connection current when
   * they were queued; steps of a dropped connection do nothing.
   */
  private enqueue(step: (pc: RTCPeerConnection) => Promise<void>): void {
    const pc = this.pc
    if (!pc) {
      return
    }
    const current = () => pc === this.pc && !this.ended
    this.queue = this.queue
      .then(() => (current() ? step(pc) : undefined))
      .catch((error: unknown) => {
        if (current()) {
          this.host.error('negotiation-failed', `Negotiation failed: ${String(error)}`)
        }
      })
  }
}
