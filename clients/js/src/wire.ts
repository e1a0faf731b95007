/**
 * Kraken's signaling wire format: JSON text frames in the envelope
 * `{"kraken": "signal", "signal": {...}}`; refusals come back as
 * `{"kraken": "error", "error": {"code", "message"}}`.
 */

export const SignalType = {
  Announce: 0,
  Offer: 1,
  Answer: 2,
  IceCandidate: 3,
  Hangup: 4,
  PeerList: 5,
  PeerJoined: 6,
  PeerLeft: 7,
} as const

export type SignalTypeValue = (typeof SignalType)[keyof typeof SignalType]

/** A signal as it travels; fields beyond these are passed on untouched. */
export interface Signal {
  type: number
  from?: string
  to?: string
  [field: string]: unknown
}

/** Close codes after which the client does not reconnect (as y-websocket 3.1+). */
export function isPermanentClose(code: number): boolean {
  return code >= 4400 && code < 4500
}

/** What each permanent close code means, as an error code. */
export const CLOSE_ERRORS: Record<number, string> = {
  4401: 'token-replaced',
  4403: 'forbidden',
  4409: 'peer-taken-over',
  4413: 'document-too-large',
}

/** Build the socket URL exactly as y-websocket's `WebsocketProvider` does. */
export function buildUrl(url: string, room: string, token: string): string {
  let base = url
  while (base.endsWith('/')) {
    base = base.slice(0, -1)
  }
  return `${base}/${room}?token=${encodeURIComponent(token)}`
}

/** Encode one signal in its envelope. */
export function encodeSignal(signal: Signal): string {
  return JSON.stringify({ kraken: 'signal', signal })
}

export type ServerMessage =
  | { kind: 'signal'; signal: Signal }
  | { kind: 'error'; error: { code: string; message: string } }

/** Decode a text frame from the server; `null` for anything else. */
export function decodeServerMessage(text: string): ServerMessage | null {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return null
  }
  if (typeof parsed !== 'object' || parsed === null) {
    return null
  }
  const envelope = parsed as Record<string, unknown>
  const body = envelope.kraken === 'signal' ? envelope.signal : envelope.error
  if (typeof body !== 'object' || body === null) {
    return null
  }
  if (envelope.kraken === 'signal' && typeof (body as Signal).type === 'number') {
    return { kind: 'signal', signal: body as Signal }
  }
  if (envelope.kraken === 'error') {
    const error = body as Record<string, unknown>
    return {
      kind: 'error',
      error: { code: String(error.code ?? 'error'), message: String(error.message ?? '') },
    }
  }
  return null
}

/** Random bytes as URL-safe base64, from `crypto.getRandomValues` (works outside secure contexts). */
export function randomString(bytes: number): string {
  const data = new Uint8Array(bytes)
  globalThis.crypto.getRandomValues(data)
  let binary = ''
  for (const byte of data) {
    binary += String.fromCharCode(byte)
  }
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

/** A random version 4 UUID (`crypto.randomUUID` exists only in secure contexts). */
export function randomUuid(): string {
  const data = new Uint8Array(16)
  globalThis.crypto.getRandomValues(data)
  data[6] = (data[6]! & 0x0f) | 0x40
  data[8] = (data[8]! & 0x3f) | 0x80
  const hex = Array.from(data, (byte) => byte.toString(16).padStart(2, '0')).join('')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}
