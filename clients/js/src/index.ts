/**
 * `@kraken/client`: peers, WebRTC calls and (with `@kraken/client/yjs`)
 * Yjs sync on one WebSocket to a Kraken server.
 */

export { KrakenClient, KrakenError, DEFAULT_ICE_SERVERS } from './client.js'
export type { KrakenClientConfig, SyncFactory, DocSyncLike } from './client.js'
export { buildUrl, SignalType } from './wire.js'
export type { Signal } from './wire.js'
export type * from './types.js'
