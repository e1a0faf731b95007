// A React page built only from the hooks, in StrictMode (effects run twice
// in development builds, as they do for users). It records every track and
// peer connection the page opens, so the test can check that unmounting
// leaves none alive.

import { StrictMode, useEffect, useRef } from 'react'
import { createRoot } from 'react-dom/client'
import { useKraken, useVideoCall } from '@kraken/client/react'

const tracks: MediaStreamTrack[] = []
const connections: RTCPeerConnection[] = []
const sockets: WebSocket[] = []

const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices)
navigator.mediaDevices.getUserMedia = async (constraints) => {
  const stream = await getUserMedia(constraints)
  tracks.push(...stream.getTracks())
  return stream
}
const NativePeerConnection = window.RTCPeerConnection
window.RTCPeerConnection = class extends NativePeerConnection {
  constructor(configuration?: RTCConfiguration) {
    super(configuration)
    connections.push(this)
  }
} as typeof RTCPeerConnection
const NativeWebSocket = window.WebSocket
window.WebSocket = class extends NativeWebSocket {
  constructor(url: string | URL, protocols?: string | string[]) {
    super(url, protocols)
    sockets.push(this)
  }
} as typeof WebSocket

const params = new URLSearchParams(location.search)
const config = {
  url: params.get('url')!,
  token: params.get('token')!,
  room: params.get('room') ?? 'react',
  name: params.get('name') ?? 'react-tester',
  iceServers: [],
}
const autoAccept = params.get('accept') === 'auto'

function Video({ stream, peerId }: { stream: MediaStream; peerId?: string }) {
  const ref = useRef<HTMLVideoElement>(null)
  useEffect(() => {
    if (ref.current) {
      ref.current.srcObject = stream
    }
  }, [stream])
  return <video ref={ref} data-peer-id={peerId} autoPlay playsInline muted />
}

function App() {
  const { peers, signaling, status, error } = useKraken(config)
  const { localStream, remoteStreams, call, hangup, incoming } = useVideoCall({
    signaling,
    video: true,
    audio: true,
    autoAccept,
  })
  return (
    <main>
      <p id="status">{status}</p>
      {error && <p id="error">{error.code}</p>}
      <ul id="peers">
        {peers.map((peer) => (
          <li key={peer.peerId} data-peer-id={peer.peerId}>
            <span className="name">{peer.name}</span>
            <button className="call" onClick={() => void call(peer.peerId).catch(() => undefined)}>
              Call
            </button>
          </li>
        ))}
      </ul>
      <div id="incoming">
        {incoming.map((ringing) => (
          <button
            key={ringing.from.peerId}
            className="accept"
            data-peer-id={ringing.from.peerId}
            onClick={() => void ringing.accept().catch(() => undefined)}
          >
            Accept {ringing.from.name}
          </button>
        ))}
      </div>
      <div id="local">{localStream && <Video stream={localStream} />}</div>
      <div id="remote">
        {Array.from(remoteStreams, ([peerId, stream]) => (
          <Video key={peerId} peerId={peerId} stream={stream} />
        ))}
      </div>
      <button id="hangup" onClick={() => hangup()}>
        Hang up
      </button>
    </main>
  )
}

const root = createRoot(document.getElementById('root')!)
root.render(
  <StrictMode>
    <App />
  </StrictMode>,
)

Object.assign(window, {
  test: {
    unmount: () => root.unmount(),
    /** What the page opened and what is still alive. */
    leftovers: () => ({
      tracks: tracks.length,
      liveTracks: tracks.filter((track) => track.readyState === 'live').length,
      connections: connections.length,
      openConnections: connections.filter((pc) => pc.connectionState !== 'closed').length,
      sockets: sockets.length,
      openSockets: sockets.filter((ws) => ws.readyState !== WebSocket.CLOSED && ws.readyState !== WebSocket.CLOSING)
        .length,
    }),
  },
})
