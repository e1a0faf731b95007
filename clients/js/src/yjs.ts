/**
 * `@kraken/client/yjs`: the same `KrakenClient`, able to keep a `Y.Doc` in
 * sync on its socket (the y-websocket sync and awareness protocol). Needs
 * the peer dependencies `yjs` and `y-protocols`; the main entry does not
 * import them.
 */

import { KrakenClient as BaseClient, type KrakenClientConfig, type SyncFactory } from './client.js'
import { DocSync } from './sync.js'

/** Document sync support for `KrakenClient`'s `sync` option. */
export const yjsSync: SyncFactory = (doc, awareness, callbacks) => new DocSync(doc, awareness, callbacks)

/** `KrakenClient` with document sync: pass `doc` (and optionally `awareness`). */
export class KrakenClient extends BaseClient {
  constructor(options: KrakenClientConfig) {
    super({ ...options, sync: options.sync ?? yjsSync })
  }
}

export { DocSync }
export { KrakenError, DEFAULT_ICE_SERVERS } from './client.js'
export type { KrakenClientConfig, SyncFactory, DocSyncLike } from './client.js'
export { buildUrl, SignalType } from './wire.js'
export type { Signal } from './wire.js'
export type * from './types.js'
