/**
 * `@kraken/client/react`: React hooks over `KrakenClient`.
 *
 * `useKraken` owns one client for as long as the component is mounted (and
 * its url, token, room, name and peer id stay the same); `useVideoCall`
 * places and answers calls on it. Both clean up on unmount: the socket is
 * closed, calls are hung up, and every track the hooks opened is stopped.
 */

import { useCallback, useEffect, useRef, useState } from 'react'

import { KrakenClient, type KrakenClientConfig } from './client.js'
import type { CallEstablished, KrakenErrorInfo, Peer, Status } from './types.js'

export type UseKrakenOptions = KrakenClientConfig

export interface UseKrakenResult {
  /** Every other peer of the room. */
  peers: Peer[]
  /** The client, for `useVideoCall`; `null` before the first effect runs. */
  signaling: KrakenClient | null
  status: Status
  /** The same client as `signaling`. */
  client: KrakenClient | null
  /** The last error event, if any. */
  error: KrakenErrorInfo | null
}

/**
 * Mark a promise as handled, so that callers may ignore it (a click handler
 * that starts a call, say) without an unhandled rejection; awaiting it still
 * throws.
 */
function quiet<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined)
  return promise
}

/** Connect to a Kraken room for the lifetime of the component. */
export function useKraken(options: UseKrakenOptions): UseKrakenResult {
  const optionsRef = useRef(options)
  optionsRef.current = options
  const [client, setClient] = useState<KrakenClient | null>(null)
  const [peers, setPeers] = useState<Peer[]>([])
  const [status, setStatus] = useState<Status>('disconnected')
  const [error, setError] = useState<KrakenErrorInfo | null>(null)
  const { url, token, room, name, peerId, doc } = options

  useEffect(() => {
    const created = new KrakenClient(optionsRef.current)
    const off = created.on((event) => {
      if (event.type === 'status') {
        setStatus(event.status)
      } else if (event.type === 'peers') {
        setPeers(event.peers)
      } else if (event.type === 'error') {
        setError(event.error)
      }
    })
    setClient(created)
    setError(null)
    created.connect().catch(() => undefined)
    return () => {
      off()
      created.destroy()
      setClient(null)
      setPeers([])
      setStatus('disconnected')
    }
  }, [url, token, room, name, peerId, doc])

  return { peers, signaling: client, status, client, error }
}

export interface UseVideoCallOptions {
  /** The client from `useKraken` (`signaling`). */
  signaling: KrakenClient | null
  /** What to send: passed to `getUserMedia` (default `true`). */
  video?: boolean | MediaTrackConstraints
  audio?: boolean | MediaTrackConstraints
  /** Answer incoming calls at once instead of listing them in `incoming`. */
  autoAccept?: boolean
}

/** A call waiting to be answered. */
export interface IncomingCall {
  from: Peer
  accept(): Promise<CallEstablished>
  reject(): void
}

export interface UseVideoCallResult {
  /** The camera and microphone, open while a call is. */
  localStream: MediaStream | null
  /** The stream of each established call, by peer id. */
  remoteStreams: Map<string, MediaStream>
  /** Call a peer; resolves when the call is established (ignoring the promise is safe). */
  call(peerId: string): Promise<CallEstablished>
  /** End the call with one peer, or all of them. */
  hangup(peerId?: string): void
  /** Calls waiting to be answered (empty with `autoAccept`). */
  incoming: IncomingCall[]
}

/** Place and answer video calls on a client from `useKraken`. */
export function useVideoCall(options: UseVideoCallOptions): UseVideoCallResult {
  const { signaling } = options
  const video = options.video ?? true
  const audio = options.audio ?? true
  const mediaRef = useRef({ video, audio, autoAccept: options.autoAccept ?? false })
  mediaRef.current = { video, audio, autoAccept: options.autoAccept ?? false }

  const [localStream, setLocalStream] = useState<MediaStream | null>(null)
  const [remoteStreams, setRemoteStreams] = useState<Map<string, MediaStream>>(() => new Map())
  const [incoming, setIncoming] = useState<IncomingCall[]>([])

  const localRef = useRef<MediaStream | null>(null)
  const openingRef = useRef<Promise<MediaStream | null> | null>(null)
  const activeRef = useRef(new Set<string>())
  const ringingRef = useRef(new Map<string, IncomingCall>())
  const generationRef = useRef(0)

  const releaseLocal = useCallback(() => {
    for (const track of localRef.current?.getTracks() ?? []) {
      track.stop()
    }
    localRef.current = null
    setLocalStream(null)
  }, [])

  const openLocal = useCallback((): Promise<MediaStream | null> => {
    if (localRef.current) {
      return Promise.resolve(localRef.current)
    }
    const { video: wantVideo, audio: wantAudio } = mediaRef.current
    if (!wantVideo && !wantAudio) {
      return Promise.resolve(null)
    }
    if (!openingRef.current) {
      const generation = generationRef.current
      openingRef.current = navigator.mediaDevices
        .getUserMedia({ video: wantVideo, audio: wantAudio })
        .then((stream) => {
          if (generation !== generationRef.current || activeRef.current.size === 0) {
            // Unmounted, or every call ended, while the camera was opening.
            for (const track of stream.getTracks()) {
              track.stop()
            }
            return null
          }
          localRef.current = stream
          setLocalStream(stream)
          return stream
        })
        .finally(() => {
          openingRef.current = null
        })
    }
    return openingRef.current
  }, [])

  const forget = useCallback(
    (peerId: string) => {
      activeRef.current.delete(peerId)
      if (activeRef.current.size === 0) {
        releaseLocal()
      }
    },
    [releaseLocal],
  )

  useEffect(() => {
    if (!signaling) {
      return undefined
    }
    const generation = ++generationRef.current
    const without = <T extends { from: Peer }>(list: T[], peerId: string): T[] =>
      list.filter((entry) => entry.from.peerId !== peerId)

    const off = signaling.on((event) => {
      if (event.type === 'call-incoming') {
        const peerId = event.from.peerId
        const answer: IncomingCall = {
          from: event.from,
          accept: () =>
            quiet(
              (async () => {
                activeRef.current.add(peerId)
                ringingRef.current.delete(peerId)
                setIncoming((list) => without(list, peerId))
                try {
                  const stream = await openLocal()
                  return await event.accept(stream ? { stream } : { video: false, audio: false })
                } catch (error) {
                  if (generation === generationRef.current && !signaling.activeCalls.includes(peerId)) {
                    forget(peerId)
                  }
                  throw error
                }
              })(),
            ),
          reject: () => {
            ringingRef.current.delete(peerId)
            setIncoming((list) => without(list, peerId))
            event.reject()
          },
        }
        if (mediaRef.current.autoAccept) {
          void answer.accept()
        } else {
          ringingRef.current.set(peerId, answer)
          setIncoming((list) => [...without(list, peerId), answer])
        }
      } else if (event.type === 'call-established') {
        setRemoteStreams((streams) => new Map(streams).set(event.peer.peerId, event.remoteStream))
      } else if (event.type === 'call-ended') {
        const peerId = event.peer.peerId
        ringingRef.current.delete(peerId)
        setIncoming((list) => without(list, peerId))
        setRemoteStreams((streams) => {
          const next = new Map(streams)
          next.delete(peerId)
          return next
        })
        forget(peerId)
      }
    })

    return () => {
      off()
      generationRef.current += 1
      for (const peerId of activeRef.current) {
        signaling.hangup(peerId)
      }
      for (const entry of ringingRef.current.values()) {
        entry.reject()
      }
      ringingRef.current.clear()
      setIncoming([])
      activeRef.current.clear()
      releaseLocal()
      setRemoteStreams(new Map())
    }
  }, [signaling, openLocal, forget, releaseLocal])

  const call = useCallback(
    (peerId: string): Promise<CallEstablished> =>
      quiet(
        (async () => {
          if (!signaling) {
            throw new Error('useVideoCall: not connected yet (signaling is null).')
          }
          activeRef.current.add(peerId)
          try {
            const stream = await openLocal()
            return await signaling.call(peerId, stream ? { stream } : { video: false, audio: false })
          } catch (error) {
            if (!signaling.activeCalls.includes(peerId)) {
              forget(peerId)
            }
            throw error
          }
        })(),
      ),
    [signaling, openLocal, forget],
  )

  const hangup = useCallback(
    (peerId?: string) => {
      signaling?.hangup(peerId)
    },
    [signaling],
  )

  return { localStream, remoteStreams, call, hangup, incoming }
}
