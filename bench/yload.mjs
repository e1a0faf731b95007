#!/usr/bin/env node
// yload: a bounded load/benchmark harness for Yjs WebSocket sync servers.
//
// It drives plain Yjs clients built from the same stack browsers use (yjs,
// y-protocols, lib0, ws) against a server at --url and measures four
// scenarios: connect, fanout, big document, idle memory. The default wire
// protocol is the standard y-websocket one (room in the URL path, binary
// frames: 0 sync, 1 awareness, 2 auth, 3 query awareness), so any server that
// speaks it (y-websocket, pycrdt-websocket, Kraken) is measured with no change
// but the URL. --protocol hocuspocus switches to Hocuspocus framing (every
// frame prefixed with the document name, an Auth frame first).
//
// Every loop is bounded by a count and by time, and the whole process has a
// hard deadline (--timeout) after which it prints what it has and exits.
//
// Run `node yload.mjs --help` for the flags.
//
// Vendored from the project's shared bench (../shared/bench/yload.mjs) and
// extended for bench/run.sh: --idle-settle-ms, and the idle result carries
// `held` (connections still open when RSS is read) and `fdLimit`.

import WebSocket from 'ws'
import * as Y from 'yjs'
import * as syncProtocol from 'y-protocols/sync'
import * as authProtocol from 'y-protocols/auth'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { readFileSync, readdirSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'

const HELP = `usage: node yload.mjs [flags]

  --url URL                base ws url; the room is appended as /<room> (default ws://127.0.0.1:1234)
  --protocol P             y-websocket (default) | hocuspocus
  --room-prefix S          room name prefix (default yload-<random>, so reruns never share rooms)
  --rooms R                rooms in connect/fanout (default 1)
  --clients-per-room C     clients per room (default 2)
  --updates U              updates written per client in fanout (default 100)
  --update-size B          characters (ASCII bytes) inserted per update (default 20)
  --rate N                 updates/s per client, 0 = as fast as possible (default 0)
  --duration S             cap on the fanout write phase in seconds (default 30)
  --query Q                extra query string, e.g. token=abc (hocuspocus: token= is sent in its Auth frame)
  --origin O               Origin header sent on every upgrade
  --scenarios LIST         comma list of connect,fanout,bigdoc,idle or all (default connect,fanout)
  --big-mb LIST            document sizes in MB for bigdoc (default 1)
  --big-joins N            fresh joins timed per big document (default 3)
  --idle K                 idle connections for the idle scenario (default 1000)
  --idle-per-room N        idle connections per room (default 10)
  --idle-settle-ms MS      idle: wait after opening and after closing before reading RSS (default 3000)
  --server-pid PID         server process: RSS and CPU time, summed over it and its child processes
  --connect-concurrency N  handshakes in flight at once (default 64)
  --drain-timeout S        how long fanout waits for deliveries after the last write (default 20)
  --timeout S              hard deadline for the whole run (default 120)
  --seed N                 PRNG seed for insert positions (default 1)
  --json                   print one JSON result line at the end (human lines go to stderr)
`

// ---------------------------------------------------------------- options

function parseOptions (argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string', default: 'ws://127.0.0.1:1234' },
      protocol: { type: 'string', default: 'y-websocket' },
      'room-prefix': { type: 'string' },
      rooms: { type: 'string', default: '1' },
      'clients-per-room': { type: 'string', default: '2' },
      updates: { type: 'string', default: '100' },
      'update-size': { type: 'string', default: '20' },
      rate: { type: 'string', default: '0' },
      duration: { type: 'string', default: '30' },
      query: { type: 'string', default: '' },
      origin: { type: 'string', default: '' },
      scenarios: { type: 'string', default: 'connect,fanout' },
      'big-mb': { type: 'string', default: '1' },
      'big-joins': { type: 'string', default: '3' },
      idle: { type: 'string', default: '1000' },
      'idle-per-room': { type: 'string', default: '10' },
      'idle-settle-ms': { type: 'string', default: '3000' },
      'server-pid': { type: 'string', default: '' },
      'connect-concurrency': { type: 'string', default: '64' },
      'drain-timeout': { type: 'string', default: '20' },
      timeout: { type: 'string', default: '120' },
      seed: { type: 'string', default: '1' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false }
    }
  })
  if (values.help) {
    process.stdout.write(HELP)
    process.exit(0)
  }

  const int = (name, min) => {
    const n = Number(values[name])
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number >= ${min}`)
    return n
  }
  let scenarios = values.scenarios.split(',').map((s) => s.trim()).filter(Boolean)
  if (scenarios.includes('all')) scenarios = ['connect', 'fanout', 'bigdoc', 'idle']
  for (const s of scenarios) {
    if (!['connect', 'fanout', 'bigdoc', 'idle'].includes(s)) throw new Error(`unknown scenario ${s}`)
  }
  if (!['y-websocket', 'hocuspocus'].includes(values.protocol)) throw new Error('--protocol must be y-websocket or hocuspocus')

  return {
    url: values.url.replace(/\/+$/, ''),
    protocol: values.protocol,
    roomPrefix: values['room-prefix'] || `yload-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`,
    rooms: int('rooms', 1),
    clientsPerRoom: int('clients-per-room', 1),
    updates: int('updates', 0),
    updateSize: int('update-size', 1),
    rate: int('rate', 0),
    duration: int('duration', 0.001),
    query: values.query.replace(/^\?/, ''),
    origin: values.origin,
    scenarios,
    bigMb: values['big-mb'].split(',').map(Number).filter((n) => n > 0),
    bigJoins: int('big-joins', 1),
    idle: int('idle', 1),
    idlePerRoom: int('idle-per-room', 1),
    idleSettleMs: int('idle-settle-ms', 0),
    serverPid: values['server-pid'] ? int('server-pid', 1) : null,
    connectConcurrency: int('connect-concurrency', 1),
    drainTimeout: int('drain-timeout', 0),
    timeout: int('timeout', 1),
    seed: int('seed', 0),
    json: values.json
  }
}

// ---------------------------------------------------------------- helpers

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const tick = () => new Promise((resolve) => setImmediate(resolve))
const now = () => performance.now()
const round = (x, d = 2) => (x == null || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d)

function percentile (sorted, p) {
  if (sorted.length === 0) return null
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

function summary (values) {
  const s = Float64Array.from(values).sort()
  return {
    n: s.length,
    p50: round(percentile(s, 50)),
    p99: round(percentile(s, 99)),
    max: round(s.length ? s[s.length - 1] : null)
  }
}

function mulberry32 (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function equalBytes (a, b) {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

// Server-side figures, read from /proc when --server-pid is given. A server
// that runs worker processes is measured whole: the figures are summed over
// the process and all its living descendants.
function statFields (pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch { return null }
}

function processTree (pid) {
  const children = new Map()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const f = statFields(name)
    if (!f) continue
    const ppid = Number(f[1])
    if (!children.has(ppid)) children.set(ppid, [])
    children.get(ppid).push(Number(name))
  }
  const tree = [Number(pid)]
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]) || []))
  return tree
}

function serverRssBytes (pid) {
  if (!pid) return null
  let total = 0
  for (const p of processTree(pid)) {
    try {
      const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))
      if (m) total += Number(m[1]) * 1024
    } catch {}
  }
  return total || null
}

function serverCpuSeconds (pid) {
  if (!pid) return null
  let ticks = 0
  for (const p of processTree(pid)) {
    const f = statFields(p)
    if (f) ticks += Number(f[11]) + Number(f[12]) // utime + stime
  }
  return ticks / 100 // USER_HZ = 100
}

// This process's open-file limit (soft), from /proc/self/limits: every
// connection is a file descriptor, so the idle scenario needs K + a margin.
function openFileLimit () {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    return m ? (m[1] === 'unlimited' ? Infinity : Number(m[1])) : null
  } catch { return null }
}

function harnessCpuSeconds () {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

// Runs fn over items with at most `limit` in flight.
async function pool (items, limit, fn) {
  const results = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i], i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}

// ---------------------------------------------------------------- client

const MSG_SYNC = 0
const MSG_AWARENESS = 1
const MSG_AUTH = 2
const MSG_QUERY_AWARENESS = 3
const HOCUS_SYNC_REPLY = 4
const HOCUS_SYNC_STATUS = 8
const HOCUS_CLOSE = 7

// One Yjs document synced over one WebSocket, like a WebsocketProvider with
// no awareness, no reconnect and no BroadcastChannel.
class SyncClient {
  constructor (opts, room) {
    this.opts = opts
    this.room = room
    this.doc = new Y.Doc()
    this.text = this.doc.getText('text')
    this.ws = null
    this.synced = false
    this.closed = false
    this.error = null
    this.bytesIn = 0
    this.doc.on('update', (update, origin) => {
      if (origin !== this) this.sendSync((enc) => syncProtocol.writeUpdate(enc, update))
    })
  }

  url () {
    const hocus = this.opts.protocol === 'hocuspocus'
    const base = hocus ? this.opts.url : `${this.opts.url}/${encodeURIComponent(this.room)}`
    return this.opts.query ? `${base}?${this.opts.query}` : base
  }

  // Resolves {openMs, syncMs} once the server's sync step 2 has been applied.
  open (timeoutMs = 15000) {
    const t0 = now()
    const headers = this.opts.origin ? { Origin: this.opts.origin } : {}
    return new Promise((resolve, reject) => {
      let openMs = null
      const fail = (err) => {
        clearTimeout(timer)
        this.error = err
        try { this.ws.terminate() } catch {}
        reject(err)
      }
      const timer = setTimeout(() => fail(new Error(`sync timeout after ${timeoutMs} ms`)), timeoutMs)
      this.onSynced = () => {
        clearTimeout(timer)
        resolve({ openMs, syncMs: now() - t0 })
      }
      this.onFail = fail
      this.ws = new WebSocket(this.url(), { headers, perMessageDeflate: false, maxPayload: 512 * 1024 * 1024 })
      this.ws.binaryType = 'nodebuffer'
      this.ws.on('unexpected-response', (_req, res) => fail(new Error(`handshake refused: HTTP ${res.statusCode}`)))
      this.ws.on('error', (err) => { if (!this.synced) fail(err) })
      this.ws.on('close', (code, reason) => {
        this.closed = true
        if (!this.synced) fail(new Error(`closed before sync: ${code} ${reason}`))
      })
      this.ws.on('open', () => {
        openMs = now() - t0
        if (this.opts.protocol === 'hocuspocus') this.sendHocuspocusAuth()
        this.sendSync((enc) => syncProtocol.writeSyncStep1(enc, this.doc))
      })
      this.ws.on('message', (data) => this.receive(data))
    })
  }

  prefix (enc) {
    if (this.opts.protocol === 'hocuspocus') encoding.writeVarString(enc, this.room)
  }

  sendSync (write) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return
    const enc = encoding.createEncoder()
    this.prefix(enc)
    encoding.writeVarUint(enc, MSG_SYNC)
    write(enc)
    this.ws.send(encoding.toUint8Array(enc))
  }

  sendHocuspocusAuth () {
    const token = new URLSearchParams(this.opts.query).get('token') || ''
    const enc = encoding.createEncoder()
    encoding.writeVarString(enc, this.room)
    encoding.writeVarUint(enc, MSG_AUTH)
    encoding.writeVarUint(enc, 0) // AuthMessageType.Token
    encoding.writeVarString(enc, token)
    this.ws.send(encoding.toUint8Array(enc))
  }

  receive (data) {
    this.bytesIn += data.length
    const decoder = decoding.createDecoder(new Uint8Array(data.buffer, data.byteOffset, data.length))
    const hocus = this.opts.protocol === 'hocuspocus'
    if (hocus) decoding.readVarString(decoder)
    const type = decoding.readVarUint(decoder)

    if (type === MSG_SYNC || (hocus && type === HOCUS_SYNC_REPLY)) {
      const enc = encoding.createEncoder()
      this.prefix(enc)
      encoding.writeVarUint(enc, MSG_SYNC)
      const empty = encoding.length(enc)
      const kind = syncProtocol.readSyncMessage(decoder, enc, this.doc, this)
      if (encoding.length(enc) > empty + 1 && this.ws.readyState === WebSocket.OPEN) this.ws.send(encoding.toUint8Array(enc))
      if (kind === syncProtocol.messageYjsSyncStep2 && !this.synced) {
        this.synced = true
        this.onSynced()
      }
    } else if (type === MSG_AUTH) {
      if (hocus) {
        const sub = decoding.readVarUint(decoder)
        if (sub === 1) this.onFail(new Error(`permission denied: ${decoding.readVarString(decoder)}`))
      } else {
        authProtocol.readAuthMessage(decoder, this.doc, (_doc, reason) => this.onFail(new Error(`permission denied: ${reason}`)))
      }
    } else if (hocus && type === HOCUS_CLOSE) {
      this.onFail(new Error(`server closed document: ${decoding.readVarString(decoder)}`))
    }
    // MSG_AWARENESS, MSG_QUERY_AWARENESS and HOCUS_SYNC_STATUS carry nothing we measure.
    void MSG_AWARENESS; void MSG_QUERY_AWARENESS; void HOCUS_SYNC_STATUS
  }

  close () {
    return new Promise((resolve) => {
      if (!this.ws || this.ws.readyState === WebSocket.CLOSED) return resolve()
      const timer = setTimeout(() => { try { this.ws.terminate() } catch {} resolve() }, 2000)
      this.ws.once('close', () => { clearTimeout(timer); resolve() })
      try { this.ws.close() } catch { resolve() }
    })
  }

  destroy () {
    try { this.ws && this.ws.terminate() } catch {}
    this.doc.destroy()
  }
}

async function openClients (opts, rooms, perRoom, label) {
  const specs = []
  for (let c = 0; c < perRoom; c++) for (const room of rooms) specs.push(room)
  const clients = specs.map((room) => new SyncClient(opts, room))
  const t0 = now()
  const timings = await pool(clients, opts.connectConcurrency, async (client) => {
    try { return await client.open() } catch (err) { return { error: err.message } }
  })
  const wallMs = now() - t0
  const errors = timings.filter((t) => t.error)
  if (errors.length) log(`${label}: ${errors.length} of ${clients.length} connections failed, first: ${errors[0].error}`)
  return { clients, timings, wallMs, errors }
}

async function closeAll (clients) {
  await pool(clients, 256, (c) => c.close())
  for (const c of clients) c.destroy()
}

// ---------------------------------------------------------------- scenarios

let logToStderr = false
function log (line) {
  (logToStderr ? process.stderr : process.stdout).write(line + '\n')
}

function roomNames (opts, tag, count) {
  return Array.from({ length: count }, (_, i) => `${opts.roomPrefix}-${tag}-${i}`)
}

// connect: open rooms × clients connections, each timed from `new WebSocket`
// to the server's sync step 2 applied. The clients are kept for fanout.
async function scenarioConnect (opts, result) {
  const rooms = roomNames(opts, 'r', opts.rooms)
  const cpu0 = serverCpuSeconds(opts.serverPid)
  const { clients, timings, wallMs, errors } = await openClients(opts, rooms, opts.clientsPerRoom, 'connect')
  const ok = timings.filter((t) => !t.error)
  result.connect = {
    connections: clients.length,
    failed: errors.length,
    firstError: errors[0] ? errors[0].error : undefined,
    openMs: summary(ok.map((t) => t.openMs)),
    syncMs: summary(ok.map((t) => t.syncMs)),
    wallMs: round(wallMs),
    connectionsPerSec: round(ok.length / (wallMs / 1000), 1),
    serverCpuS: cpu0 == null ? null : round(serverCpuSeconds(opts.serverPid) - cpu0)
  }
  const c = result.connect
  log(`connect  ${c.connections} conns (${c.failed} failed): sync p50 ${c.syncMs.p50} ms p99 ${c.syncMs.p99} ms, ${c.connectionsPerSec} conn/s`)
  return { rooms, clients, ok: errors.length === 0 }
}

// fanout: every client inserts --updates strings of --update-size characters
// at random positions of the room's shared Y.Text. Latency of one update is
// from just before the writer's local transaction to the moment the last other
// client of the room has applied it (seen as its state vector passing the
// writer's clock). All clients live in this process, so one clock serves.
async function scenarioFanout (opts, result, rooms, clients) {
  const byRoom = new Map(rooms.map((r) => [r, []]))
  for (const c of clients) byRoom.get(c.room).push(c)

  const latencies = []
  let delivered = 0
  let expected = 0
  let written = 0
  let lastDelivery = 0
  const writers = new Map() // clientID -> { writes: [{end, t0, remaining}], room }

  for (const [, members] of byRoom) {
    for (const c of members) writers.set(c.doc.clientID, { writes: [], members })
  }
  for (const [, members] of byRoom) {
    for (const receiver of members) {
      const cursor = new Map() // writer clientID -> index of first write not yet seen
      receiver.doc.on('afterTransaction', (tr) => {
        if (tr.origin !== receiver) return
        const t = now()
        tr.afterState.forEach((after, cid) => {
          const w = writers.get(cid)
          if (!w || cid === receiver.doc.clientID) return
          let i = cursor.get(cid) || 0
          while (i < w.writes.length && w.writes[i].end <= after) {
            const write = w.writes[i]
            delivered++
            lastDelivery = t
            if (--write.remaining === 0) latencies.push(t - write.t0)
            i++
          }
          cursor.set(cid, i)
        })
      })
    }
  }

  const cpu0 = serverCpuSeconds(opts.serverPid)
  const hcpu0 = harnessCpuSeconds()
  const start = now()
  const deadline = start + opts.duration * 1000
  const chars = 'abcdefghijklmnopqrstuvwxyz0123456789'

  const writeOne = (client, rng, n) => {
    const ch = chars[n % chars.length]
    const content = ch.repeat(opts.updateSize)
    const others = byRoom.get(client.room).length - 1
    const t0 = now()
    const pos = Math.floor(rng() * (client.text.length + 1))
    client.text.insert(pos, content)
    const end = Y.getState(client.doc.store, client.doc.clientID)
    writers.get(client.doc.clientID).writes.push({ end, t0, remaining: others })
    expected += others
    written++
    if (others === 0) latencies.push(0)
  }

  const runWriter = async (client, index) => {
    const rng = mulberry32(opts.seed * 1000003 + index)
    if (opts.rate > 0) {
      const interval = 1000 / opts.rate
      const phase = rng() * interval
      for (let n = 0; n < opts.updates; n++) {
        const due = start + phase + n * interval
        if (due > deadline) break
        const wait = due - now()
        if (wait > 0) await sleep(wait)
        if (client.ws.readyState !== WebSocket.OPEN) break
        writeOne(client, rng, n)
      }
    } else {
      for (let n = 0; n < opts.updates; n++) {
        if (now() > deadline || client.ws.readyState !== WebSocket.OPEN) break
        writeOne(client, rng, n)
        await tick()
      }
    }
  }

  await Promise.all(clients.map((c, i) => runWriter(c, i)))
  const writeEnd = now()

  const drainDeadline = now() + opts.drainTimeout * 1000
  while (delivered < expected && now() < drainDeadline) await sleep(5)
  const end = delivered < expected ? now() : Math.max(lastDelivery, writeEnd)

  // Convergence: every client of a room has the same state vector and text,
  // the text holds every character written, and a fresh client that joins
  // afterwards gets the same state from the server.
  let convergedClients = true
  let lengthOk = true
  const roomText = new Map()
  for (const [room, members] of byRoom) {
    const sv0 = Y.encodeStateVector(members[0].doc)
    const text0 = members[0].text.toString()
    for (const m of members.slice(1)) {
      if (!equalBytes(sv0, Y.encodeStateVector(m.doc)) || m.text.toString() !== text0) convergedClients = false
    }
    const writtenChars = members.reduce((sum, m) => sum + writers.get(m.doc.clientID).writes.length, 0) * opts.updateSize
    if (text0.length !== writtenChars) lengthOk = false
    roomText.set(room, { sv0, text0 })
  }
  const verifiers = await openClients(opts, rooms, 1, 'fanout verify')
  let convergedServer = verifiers.errors.length === 0
  for (const v of verifiers.clients) {
    const ref = roomText.get(v.room)
    if (!v.synced || v.text.toString() !== ref.text0 || !equalBytes(ref.sv0, Y.encodeStateVector(v.doc))) convergedServer = false
  }
  await closeAll(verifiers.clients)

  const spanS = (end - start) / 1000
  result.fanout = {
    rooms: opts.rooms,
    clientsPerRoom: opts.clientsPerRoom,
    updateSize: opts.updateSize,
    ratePerClient: opts.rate,
    written,
    deliveriesExpected: expected,
    deliveries: delivered,
    latencyMs: summary(latencies),
    writesPerSec: round(written / ((writeEnd - start) / 1000), 1),
    deliveredPerSec: round(delivered / spanS, 1),
    spanS: round(spanS, 3),
    converged: convergedClients && lengthOk && convergedServer && delivered === expected,
    convergence: { clientsAgree: convergedClients, allCharsPresent: lengthOk, serverAgrees: convergedServer, allDelivered: delivered === expected },
    serverCpuS: cpu0 == null ? null : round(serverCpuSeconds(opts.serverPid) - cpu0),
    harnessCpuS: round(harnessCpuSeconds() - hcpu0)
  }
  const f = result.fanout
  log(`fanout   ${f.written} writes -> ${f.deliveries}/${f.deliveriesExpected} deliveries: latency p50 ${f.latencyMs.p50} p99 ${f.latencyMs.p99} max ${f.latencyMs.max} ms, ${f.deliveredPerSec} delivered/s, converged ${f.converged}`)
}

// bigdoc: a writer inserts an N MB text in 64 KiB transactions; a watcher in
// the same room tells when the server has it all (upload + broadcast). Then
// --big-joins fresh clients join one after another, each timed from
// `new WebSocket` to holding the full text.
async function scenarioBigdoc (opts, result) {
  result.bigdoc = []
  for (const mb of opts.bigMb) {
    const room = `${opts.roomPrefix}-big-${mb}mb`
    const size = Math.round(mb * 1024 * 1024)
    const entry = { mb, chars: size }
    const pair = await openClients(opts, [room], 2, 'bigdoc')
    if (pair.errors.length) {
      entry.error = pair.errors[0].error
      result.bigdoc.push(entry)
      await closeAll(pair.clients)
      continue
    }
    const [writer, watcher] = pair.clients
    const chunk = 64 * 1024
    const cpu0 = serverCpuSeconds(opts.serverPid)
    const t0 = now()
    for (let off = 0; off < size; off += chunk) {
      const n = Math.min(chunk, size - off)
      writer.text.insert(writer.text.length, 'x'.repeat(n))
      await tick()
    }
    const uploadDeadline = now() + 60000
    while (watcher.text.length < size && now() < uploadDeadline) await sleep(2)
    entry.uploadMs = round(now() - t0)
    entry.uploadComplete = watcher.text.length === size
    const joins = []
    for (let j = 0; j < opts.bigJoins && entry.uploadComplete; j++) {
      const joiner = new SyncClient(opts, room)
      const tj = now()
      try {
        await joiner.open(60000)
        const joinDeadline = now() + 60000
        while (joiner.text.length < size && now() < joinDeadline) await sleep(1)
        joins.push({ ms: now() - tj, complete: joiner.text.length === size, bytesIn: joiner.bytesIn })
      } catch (err) {
        joins.push({ ms: null, complete: false, error: err.message })
      }
      await joiner.close()
      joiner.destroy()
    }
    entry.joinMs = summary(joins.filter((j) => j.ms != null).map((j) => j.ms))
    entry.joinsComplete = joins.every((j) => j.complete) && joins.length > 0
    entry.joinBytes = joins[0] ? joins[0].bytesIn : null
    entry.serverCpuS = cpu0 == null ? null : round(serverCpuSeconds(opts.serverPid) - cpu0)
    const errs = joins.filter((j) => j.error)
    if (errs.length) entry.error = errs[0].error
    result.bigdoc.push(entry)
    log(`bigdoc   ${mb} MB: upload+broadcast ${entry.uploadMs} ms, fresh join full sync p50 ${entry.joinMs.p50} ms (n=${entry.joinMs.n}), complete ${entry.joinsComplete}`)
    await closeAll(pair.clients)
  }
}

// idle: server RSS before, with K idle synced connections open, and after
// they are closed again. Needs --server-pid.
async function scenarioIdle (opts, result) {
  const pid = opts.serverPid
  const rooms = roomNames(opts, 'idle', Math.ceil(opts.idle / opts.idlePerRoom))
  const fdLimit = openFileLimit()
  if (fdLimit != null && fdLimit < opts.idle + 256) {
    log(`idle: open-file limit ${fdLimit} is below ${opts.idle} connections + 256; raise it (ulimit -n) or expect failures`)
  }
  await sleep(Math.min(1000, opts.idleSettleMs))
  const before = serverRssBytes(pid)
  const perRoom = Math.ceil(opts.idle / rooms.length)
  const { clients, errors, wallMs } = await openClients(opts, rooms, perRoom, 'idle')
  const extra = clients.splice(opts.idle)
  await closeAll(extra)
  const open = clients.filter((c) => c.synced && !c.closed).length
  await sleep(opts.idleSettleMs)
  // Still open after the settle time: a server that drops idle connections
  // has not held them.
  const held = clients.filter((c) => c.synced && !c.closed).length
  const during = serverRssBytes(pid)
  await closeAll(clients)
  await sleep(opts.idleSettleMs)
  const after = serverRssBytes(pid)
  result.idle = {
    connections: clients.length,
    failed: errors.length,
    held,
    fdLimit: fdLimit === Infinity ? 'unlimited' : fdLimit,
    rooms: rooms.length,
    openWallMs: round(wallMs),
    rssBeforeMB: before == null ? null : round(before / 1048576),
    rssOpenMB: during == null ? null : round(during / 1048576),
    rssAfterCloseMB: after == null ? null : round(after / 1048576),
    bytesPerConnection: before == null ? null : Math.round((during - before) / Math.max(1, open))
  }
  const i = result.idle
  log(`idle     ${i.connections} conns in ${i.rooms} rooms (${i.failed} failed, ${i.held} held): RSS ${i.rssBeforeMB} -> ${i.rssOpenMB} MB (${i.bytesPerConnection} B/conn), after close ${i.rssAfterCloseMB} MB`)
}

// ---------------------------------------------------------------- main

async function main () {
  const opts = parseOptions(process.argv.slice(2))
  logToStderr = opts.json
  const result = {
    tool: 'yload',
    date: new Date().toISOString(),
    url: opts.url,
    protocol: opts.protocol,
    roomPrefix: opts.roomPrefix,
    scenarios: opts.scenarios
  }
  const deadline = setTimeout(() => {
    result.error = `hard deadline of ${opts.timeout} s reached`
    finish(result, opts, 3)
  }, opts.timeout * 1000)

  let open = null
  if (opts.scenarios.includes('connect') || opts.scenarios.includes('fanout')) {
    open = await scenarioConnect(opts, result)
  }
  if (opts.scenarios.includes('fanout')) {
    if (open.ok) await scenarioFanout(opts, result, open.rooms, open.clients)
    else result.fanout = { error: 'skipped: not every client connected' }
  }
  if (open) await closeAll(open.clients)
  if (opts.scenarios.includes('bigdoc')) await scenarioBigdoc(opts, result)
  if (opts.scenarios.includes('idle')) {
    if (opts.serverPid) await scenarioIdle(opts, result)
    else result.idle = { error: 'skipped: --server-pid not given' }
  }
  clearTimeout(deadline)
  finish(result, opts, 0)
}

function finish (result, opts, code) {
  if (opts.json) process.stdout.write(JSON.stringify(result) + '\n')
  process.exit(code)
}

export { SyncClient }

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    process.stderr.write(`yload: ${err && err.stack ? err.stack : err}\n`)
    process.exit(1)
  })
}
