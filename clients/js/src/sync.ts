/**
 * The y-websocket sync and awareness protocol on the client's socket.
 *
 * This module is the only one that imports yjs and y-protocols; the client
 * loads it with a dynamic `import()` only when it is given a `doc`, so that
 * signaling-only users need neither package.
 */

import * as Y from 'yjs'
import {
  Awareness,
  applyAwarenessUpdate,
  encodeAwarenessUpdate,
  removeAwarenessStates,
} from 'y-protocols/awareness'

import type { AwarenessLike, YDocLike } from './types.js'

const MESSAGE_SYNC = 0
const MESSAGE_AWARENESS = 1
const MESSAGE_AUTH = 2
const MESSAGE_QUERY_AWARENESS = 3

const SYNC_STEP1 = 0
const SYNC_STEP2 = 1
const SYNC_UPDATE = 2

/** A growing byte buffer with lib0's variable-length encodings. */
class Writer {
  private bytes: number[] = []

  uint(value: number): this {
    let rest = value
    while (rest > 0x7f) {
      this.bytes.push(0x80 | (rest & 0x7f))
      rest = Math.floor(rest / 128)
    }
    this.bytes.push(rest)
    return this
  }

  array(data: Uint8Array): this {
    this.uint(data.length)
    for (const byte of data) {
      this.bytes.push(byte)
    }
    return this
  }

  done(): Uint8Array {
    return Uint8Array.from(this.bytes)
  }
}

/** Reads lib0's variable-length encodings; throws on truncated input. */
class Reader {
  private offset = 0

  constructor(private readonly data: Uint8Array) {}

  uint(): number {
    let value = 0
    let multiplier = 1
    for (;;) {
      if (this.offset >= this.data.length) {
        throw new Error('Unexpected end of array')
      }
      const byte = this.data[this.offset++]!
      value += (byte & 0x7f) * multiplier
      if (byte < 0x80) {
        return value
      }
      multiplier *= 128
      if (multiplier > 2 ** 53) {
        throw new Error('Integer out of range')
      }
    }
  }

  array(): Uint8Array {
    const length = this.uint()
    if (this.offset + length > this.data.length) {
      throw new Error('Unexpected end of array')
    }
    const slice = this.data.subarray(this.offset, this.offset + length)
    this.offset += length
    return slice
  }

  string(): string {
    return new TextDecoder().decode(this.array())
  }
}

export interface DocSyncCallbacks {
  /** Send one binary frame (dropped while the socket is not open). */
  send(frame: Uint8Array): void
  /** The server refused access (y-protocols auth message). */
  denied(reason: string): void
}

/**
 * One document's sync over one client: what to send on open, how to answer
 * what arrives, and what to forget on close.
 */
export class DocSync {
  readonly doc: Y.Doc
  readonly awareness: Awareness
  synced = false
  private readonly ownsAwareness: boolean
  private syncedWaiters: Array<() => void> = []

  constructor(
    doc: YDocLike,
    awareness: AwarenessLike | null | undefined,
    private readonly callbacks: DocSyncCallbacks,
  ) {
    this.doc = doc as unknown as Y.Doc
    this.ownsAwareness = !awareness
    this.awareness = (awareness as unknown as Awareness | null) ?? new Awareness(this.doc)
    this.doc.on('update', this.onDocUpdate)
    this.awareness.on('update', this.onAwarenessUpdate)
  }

  /** The socket opened: send step 1 and, if set, the local awareness state. */
  opened(): void {
    this.callbacks.send(
      new Writer().uint(MESSAGE_SYNC).uint(SYNC_STEP1).array(Y.encodeStateVector(this.doc)).done(),
    )
    if (this.awareness.getLocalState() !== null) {
      this.sendAwareness([this.doc.clientID])
    }
  }

  /** Handle one binary frame; throws on a malformed one. */
  receive(frame: Uint8Array): void {
    const reader = new Reader(frame)
    const kind = reader.uint()
    switch (kind) {
      case MESSAGE_SYNC:
        this.receiveSync(reader)
        break
      case MESSAGE_AWARENESS:
        applyAwarenessUpdate(this.awareness, reader.array(), this)
        break
      case MESSAGE_QUERY_AWARENESS:
        this.sendAwareness(Array.from(this.awareness.getStates().keys()))
        break
      case MESSAGE_AUTH:
        if (reader.uint() === 0) {
          this.callbacks.denied(reader.string())
        }
        break
      default:
        break
    }
  }

  private receiveSync(reader: Reader): void {
    const step = reader.uint()
    if (step === SYNC_STEP1) {
      const update = Y.encodeStateAsUpdate(this.doc, reader.array())
      this.callbacks.send(new Writer().uint(MESSAGE_SYNC).uint(SYNC_STEP2).array(update).done())
    } else if (step === SYNC_STEP2 || step === SYNC_UPDATE) {
      Y.applyUpdate(this.doc, reader.array(), this)
      if (step === SYNC_STEP2 && !this.synced) {
        this.synced = true
        const waiters = this.syncedWaiters
        this.syncedWaiters = []
        for (const resolve of waiters) {
          resolve()
        }
      }
    }
  }

  /** Resolves once the first step 2 of the current connection is applied. */
  whenSynced(): Promise<void> {
    if (this.synced) {
      return Promise.resolve()
    }
    return new Promise((resolve) => this.syncedWaiters.push(resolve))
  }

  /** The socket closed: forget the other clients' awareness, as the stock client does. */
  closed(): void {
    this.synced = false
    const others = Array.from(this.awareness.getStates().keys()).filter(
      (id) => id !== this.doc.clientID,
    )
    removeAwarenessStates(this.awareness, others, this)
  }

  /** Tell the server this client's awareness is gone, before a deliberate close. */
  leaving(): void {
    this.callbacks.send(
      new Writer()
        .uint(MESSAGE_AWARENESS)
        .array(encodeAwarenessUpdate(this.awareness, [this.doc.clientID], new Map()))
        .done(),
    )
  }

  /** Stop listening to the document and awareness. */
  destroy(): void {
    this.doc.off('update', this.onDocUpdate)
    this.awareness.off('update', this.onAwarenessUpdate)
    if (this.ownsAwareness) {
      this.awareness.destroy()
    }
  }

  private sendAwareness(clients: number[]): void {
    if (clients.length === 0) {
      return
    }
    this.callbacks.send(
      new Writer()
        .uint(MESSAGE_AWARENESS)
        .array(encodeAwarenessUpdate(this.awareness, clients))
        .done(),
    )
  }

  private readonly onDocUpdate = (update: Uint8Array, origin: unknown): void => {
    if (origin !== this) {
      this.callbacks.send(new Writer().uint(MESSAGE_SYNC).uint(SYNC_UPDATE).array(update).done())
    }
  }

  private readonly onAwarenessUpdate = (
    change: { added: number[]; updated: number[]; removed: number[] },
    origin: unknown,
  ): void => {
    // Changes that came from the server, or remote states timing out here,
    // are the server's business; only this client's own changes go out.
    if (origin === this || origin === 'timeout') {
      return
    }
    this.sendAwareness([...change.added, ...change.updated, ...change.removed])
  }
}
