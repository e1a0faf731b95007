// The demo's one script: the client with document sync, and Yjs itself, so
// that the page needs nothing else. `npm run build:demo` bundles it into
// kraken/demo_static/kraken-client.js.

export * from '../src/yjs.js'
export * as Y from 'yjs'
