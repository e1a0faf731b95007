// Either a stock y-websocket WebsocketProvider (kind=stock, with
// disableBc so that tabs do not sync around the server) or KrakenClient
// with a doc (kind=kraken) on a Y.Text, for the convergence test.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { KrakenClient } from '@kraken/client/yjs'

const params = new URLSearchParams(location.search)
const url = params.get('url')!
const token = params.get('token')!
const room = params.get('room') ?? 'stock'

const doc = new Y.Doc()
const text = doc.getText('shared')
const status = document.getElementById('status')!
const shown = document.getElementById('text')!
text.observe(() => {
  shown.textContent = text.toString()
})

let synced = false
if (params.get('kind') === 'kraken') {
  const client = new KrakenClient({ url, token, room, name: 'kraken-doc', doc, iceServers: [] })
  client.on((event) => {
    if (event.type === 'status') {
      status.textContent = event.status
    }
  })
  void client.connect().then(() => client.whenSynced()).then(() => {
    synced = true
  })
} else {
  const provider = new WebsocketProvider(url, room, doc, { params: { token }, disableBc: true })
  provider.on('status', ({ status: value }: { status: string }) => {
    status.textContent = value
  })
  provider.on('sync', (isSynced: boolean) => {
    synced = isSynced
  })
}

Object.assign(window, {
  test: {
    get synced() {
      return synced
    },
    insert(index: number, value: string) {
      text.insert(Math.min(index, text.length), value)
    },
    text: () => text.toString(),
  },
})
