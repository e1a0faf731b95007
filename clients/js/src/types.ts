/**
 * The public types of `@kraken/client`: options, peers and the events a
 * listener receives (the event table of Kraken's SPEC.md).
 */

/** A peer as the server describes it. */
export interface Peer {
  peerId: string
  name: string
  meta: Record<string, unknown> | null
}

/** The state of the signaling socket. */
export type Status = 'connecting' | 'connected' | 'disconnected'

/** Why a call ended. */
export type CallEndReason = 'hangup' | 'rejected' | 'peer-left' | 'failed'

/** `{code, message}`: a refusal from the server or a failure in the client. */
export interface KrakenErrorInfo {
  code: string
  message: string
}

/**
 * What to send in a call. `video` and `audio` are passed to
 * `getUserMedia` (`true` or constraints); with `stream`, its tracks are sent
 * instead and the client does not stop them when the call ends.
 */
export interface MediaOptions {
  video?: boolean | MediaTrackConstraints
  audio?: boolean | MediaTrackConstraints
  stream?: MediaStream | null
}

export interface StatusEvent {
  type: 'status'
  status: Status
}

export interface PeersEvent {
  type: 'peers'
  peers: Peer[]
}

export interface PeerJoinedEvent {
  type: 'peer-joined'
  peer: Peer
}

export interface PeerLeftEvent {
  type: 'peer-left'
  peer: Peer
}

export interface CallIncomingEvent {
  type: 'call-incoming'
  from: Peer
  /** Answer the call; sends audio and video unless told otherwise. */
  accept(media?: MediaOptions): Promise<CallEstablished>
  /** Decline the call: a Hangup with reason "rejected". */
  reject(): void
}

export interface CallEstablished {
  peer: Peer
  remoteStream: MediaStream
  /** What this side sends; `null` when it sends nothing. */
  localStream: MediaStream | null
}

export interface CallEstablishedEvent extends CallEstablished {
  type: 'call-established'
}

export interface CallEndedEvent {
  type: 'call-ended'
  peer: Peer
  reason: CallEndReason
}

export interface ErrorEvent {
  type: 'error'
  error: KrakenErrorInfo
}

/** One event of the client, told apart by `type`. */
export type KrakenEvent =
  | StatusEvent
  | PeersEvent
  | PeerJoinedEvent
  | PeerLeftEvent
  | CallIncomingEvent
  | CallEstablishedEvent
  | CallEndedEvent
  | ErrorEvent

export type KrakenListener = (event: KrakenEvent) => void

/**
 * The parts of a `Y.Doc` the client relies on; pass a real `Y.Doc`.
 * Typed structurally so that signaling-only users need not install yjs.
 */
export interface YDocLike {
  clientID: number
  guid: string
}

/** The parts of a y-protocols `Awareness` the client relies on. */
export interface AwarenessLike {
  clientID: number
  getLocalState(): Record<string, unknown> | null
}

/** The WebSocket constructor the client uses (a polyfill such as `ws` in Node). */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[]): WebSocket
}

export interface KrakenClientOptions {
  /** The server, `ws://host:port` or `wss://host[/prefix]`, as for `WebsocketProvider`. */
  url: string
  /** An app token (or the deployment token, in a browser). */
  token: string
  /** The room, not encoded, exactly as `WebsocketProvider` takes it. */
  room: string
  /** The name other peers see. */
  name: string
  /** This peer's id; a random UUID by default. Kept across reconnects. */
  peerId?: string
  /** Free-form data other peers see (at most 1 KiB of JSON). */
  meta?: Record<string, unknown> | null
  /** ICE servers for calls; replaces the default public STUN servers. */
  iceServers?: RTCIceServer[]
  /** A `Y.Doc` to keep in sync on the same socket (needs yjs and y-protocols). */
  doc?: YDocLike | null
  /** The `Awareness` of `doc`; created by the client when omitted. */
  awareness?: AwarenessLike | null
  /**
   * The secret that lets a reconnect take its peer id over (16 to 128
   * characters); random by default. Never sent to other peers.
   */
  secret?: string
  /** The WebSocket class; the global one by default (pass `ws` in Node 20). */
  WebSocket?: WebSocketConstructor
  /** The longest wait between reconnect attempts, in ms (2500). */
  maxBackoffMs?: number
  /**
   * How often, in ms, the client re-announces itself as a keepalive (15000);
   * a socket that heard nothing for twice as long is replaced.
   */
  keepaliveMs?: number
  /** How long a call may take to connect before it fails, in ms (60000; 0 = no limit). */
  callTimeoutMs?: number
  /**
   * How long, in ms, an established call outlives its peer's signaling socket
   * while the media still flow, waiting for the peer to reconnect (5000).
   */
  peerLeftGraceMs?: number
}
