// Kraken interop driver: drives stock y-websocket clients for the Python tests.
//
// Protocol: newline-delimited JSON. One command per line on stdin; exactly one
// reply line per command on stdout, `{"seq": N, "ok": true, ...}` or
// `{"seq": N, "ok": false, "error": "..."}`. Nothing else is ever written to
// stdout: diagnostics (and anything a library prints) go to stderr.
//
// Every client is a real `WebsocketProvider` from y-websocket with its own
// `Y.Doc`, connected through a subclass of ws's WebSocket that can send an
// Origin and an Authorization header. BroadcastChannel sync is disabled so that
// clients in this process only ever talk through the server under test.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

// ---------------------------------------------------------------------------
// stdout is reserved for replies.

const realStdoutWrite = process.stdout.write.bind(process.stdout)
const MAX_LOG = 500

/** Messages recorded from uncaught exceptions and unhandled rejections. */
const errors = []
/** Messages libraries printed with console.warn / console.error. */
const warnings = []

const remember = (list, msg) => {
  list.push(msg)
  if (list.length > MAX_LOG) list.splice(0, list.length - MAX_LOG)
}

const fmt = (args) =>
  args
    .map((a) => (a instanceof Error ? a.stack || String(a) : typeof a === 'string' ? a : safeJson(a)))
    .join(' ')

const safeJson = (v) => {
  try {
    return JSON.stringify(v)
  } catch {
    return String(v)
  }
}

const logErr = (...args) => process.stderr.write('[driver] ' + fmt(args) + '\n')

// Anything a library logs goes to stderr; warnings/errors are also recorded
// (y-websocket reports "Permission denied" auth messages via console.warn).
console.log = (...args) => logErr(...args)
console.info = (...args) => logErr(...args)
console.debug = (...args) => logErr(...args)
console.warn = (...args) => {
  remember(warnings, fmt(args))
  logErr('warn:', ...args)
}
console.error = (...args) => {
  remember(warnings, fmt(args))
  logErr('error:', ...args)
}

process.on('uncaughtException', (err) => {
  const msg = 'uncaughtException: ' + (err && err.stack ? err.stack : String(err))
  remember(errors, msg)
  logErr(msg)
})
process.on('unhandledRejection', (reason) => {
  const msg = 'unhandledRejection: ' + (reason && reason.stack ? reason.stack : String(reason))
  remember(errors, msg)
  logErr(msg)
})

const reply = (obj) => {
  realStdoutWrite(JSON.stringify(obj) + '\n')
}

// ---------------------------------------------------------------------------
// Helpers.

const POLL_MS = 50 // fallback poll interval for waits (events wake waiters sooner)
const MAX_TIMEOUT_S = 300

/** JSON with object keys sorted, so deep equality ignores key order. */
const canonical = (v) => {
  if (v === undefined) return undefined
  if (v === null || typeof v !== 'object') return JSON.stringify(v)
  if (Array.isArray(v)) return '[' + v.map((x) => (x === undefined ? 'null' : canonical(x))).join(',') + ']'
  const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort()
  return '{' + keys.map((k) => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}'
}

const timeoutMs = (cmd) => {
  const t = cmd.timeout === undefined || cmd.timeout === null ? 5 : Number(cmd.timeout)
  if (!Number.isFinite(t) || t < 0) throw new Error('bad timeout: ' + cmd.timeout)
  return Math.min(t, MAX_TIMEOUT_S) * 1000
}

class CommandError extends Error {
  constructor (message, extra = {}) {
    super(message)
    this.extra = extra
  }
}

// ---------------------------------------------------------------------------
// Clients.

/** @type {Map<string, Client>} */
const clients = new Map()

/**
 * A WebSocket class (for y-websocket's WebSocketPolyfill option) that sends
 * the given headers on the opening handshake.
 *
 * Its on{open,message,close,error} handlers are wrapped so that an exception
 * in y-websocket's handler (e.g. decoding a malformed frame from the server)
 * is recorded instead of propagating into ws's frame parser, which would wedge
 * the socket. Browsers isolate handler exceptions from the socket the same way.
 */
const makeWebSocketClass = (headers, onHandlerError) => {
  const wrap = (kind, fn) =>
    typeof fn !== 'function'
      ? fn
      : function (event) {
        try {
          return fn.call(this, event)
        } catch (e) {
          onHandlerError(kind, e)
        }
      }
  return class HeaderWebSocket extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols, { headers: { ...headers } })
    }

    get onopen () { return super.onopen }
    set onopen (fn) { super.onopen = wrap('open', fn) }
    get onmessage () { return super.onmessage }
    set onmessage (fn) { super.onmessage = wrap('message', fn) }
    get onclose () { return super.onclose }
    set onclose (fn) { super.onclose = wrap('close', fn) }
    get onerror () { return super.onerror }
    set onerror (fn) { super.onerror = wrap('error', fn) }
  }
}

class Client {
  constructor (id, cmd) {
    if (typeof cmd.url !== 'string') throw new Error('connect needs "url"')
    if (typeof cmd.room !== 'string') throw new Error('connect needs "room"')
    this.id = id
    this.status = 'new'
    this.closes = [] // every connection-close: {code, reason, wasClean, local}
    this.opens = 0 // status 'connected' events (= websocket open events)
    this.connectionErrors = [] // messages of 'connection-error' events
    this.handlerErrors = [] // exceptions thrown by y-websocket's socket handlers
    this.syncEvents = 0 // times provider.synced became true
    this.waiters = new Set()
    this.destroyed = false

    const headers = {}
    if (cmd.origin != null) headers.Origin = String(cmd.origin)
    if (cmd.authorization != null) headers.Authorization = String(cmd.authorization)
    const params = {}
    for (const [k, v] of Object.entries(cmd.params || {})) params[k] = String(v)

    const opts = {
      // Connect only after our listeners are attached, so that the first
      // 'connecting' status is observed; otherwise identical to connect=true.
      connect: false,
      disableBc: true,
      params,
      WebSocketPolyfill: makeWebSocketClass(headers, (kind, e) => {
        const msg = `client ${id}: on${kind} handler threw: ` + (e && e.stack ? e.stack : String(e))
        remember(errors, msg)
        remember(this.handlerErrors, msg)
        logErr(msg)
        this.wake()
      })
    }
    if (Array.isArray(cmd.protocols)) opts.protocols = cmd.protocols.map(String)
    if (cmd.maxBackoffTime != null) opts.maxBackoffTime = Number(cmd.maxBackoffTime)
    if (cmd.reconnect === false) opts.shouldReconnect = () => false
    else if (cmd.reconnect === true) opts.shouldReconnect = () => true

    this.doc = new Y.Doc()
    this.provider = new WebsocketProvider(cmd.url, cmd.room, this.doc, opts)
    const p = this.provider
    p.on('status', ({ status }) => {
      this.status = status
      if (status === 'connected') this.opens++
      this.wake()
    })
    p.on('sync', (synced) => {
      if (synced) this.syncEvents++
      this.wake()
    })
    p.on('connection-close', (event) => {
      // y-websocket passes the ws CloseEvent, or null for a close we initiated
      // ourselves (disconnect()/destroy(), or its 30 s no-message watchdog).
      if (event == null) {
        this.closes.push({ code: null, reason: '', wasClean: true, local: true })
      } else {
        this.closes.push({
          code: event.code,
          reason: String(event.reason ?? ''),
          wasClean: !!event.wasClean,
          local: false
        })
      }
      if (this.closes.length > MAX_LOG) this.closes.splice(0, this.closes.length - MAX_LOG)
      this.wake()
    })
    p.on('connection-error', (event) => {
      const msg = event && (event.message || (event.error && event.error.message))
      remember(this.connectionErrors, msg ? String(msg) : String(event && event.type))
      this.wake()
    })
    this.doc.on('update', () => this.wake())
    p.awareness.on('change', () => this.wake())
    p.connect()
  }

  /** Re-check every pending wait of this client. */
  wake () {
    for (const w of this.waiters) w.check()
  }

  /**
   * Resolve true when pred() holds, false after ms milliseconds. Checked on
   * every client event, and every POLL_MS as a fallback.
   */
  waitFor (pred, ms) {
    return new Promise((resolve) => {
      const w = {
        done: false,
        check: () => {
          if (w.done) return
          let ok = false
          try {
            ok = !!pred()
          } catch (e) {
            ok = false
          }
          if (ok || this.destroyed) finish(ok)
        }
      }
      const finish = (ok) => {
        w.done = true
        clearTimeout(w.timer)
        clearInterval(w.poll)
        this.waiters.delete(w)
        resolve(ok)
      }
      this.waiters.add(w)
      w.timer = setTimeout(() => finish(false), ms)
      w.poll = setInterval(w.check, POLL_MS)
      w.check()
    })
  }

  otherStates () {
    const out = {}
    for (const [cid, state] of this.provider.awareness.getStates()) {
      if (cid !== this.doc.clientID) out[String(cid)] = state
    }
    return out
  }

  mapValue (name, key) {
    return this.doc.getMap(name).toJSON()[key]
  }

  snapshot (cmd = {}) {
    const names = Array.isArray(cmd.names) ? cmd.names.map(String) : ['text']
    const mapName = cmd.map == null ? 'map' : String(cmd.map)
    const texts = {}
    for (const n of names) texts[n] = this.doc.getText(n).toString()
    return {
      texts,
      map: this.doc.getMap(mapName).toJSON(),
      synced: this.provider.synced,
      status: this.status,
      closes: this.closes.slice(),
      stateVector: Buffer.from(Y.encodeStateVector(this.doc)).toString('base64'),
      self: this.doc.clientID,
      errors: errors.slice(),
      warnings: warnings.slice()
    }
  }

  stats () {
    return {
      opens: this.opens,
      closes: this.closes.slice(),
      closeCount: this.closes.length,
      connectionErrors: this.connectionErrors.length,
      connectionErrorMessages: this.connectionErrors.slice(),
      syncs: this.syncEvents,
      handlerErrors: this.handlerErrors.length,
      status: this.status,
      synced: this.provider.synced
    }
  }

  destroy () {
    if (this.destroyed) return
    this.destroyed = true
    try {
      this.provider.destroy()
    } finally {
      this.doc.destroy() // also destroys the provider's Awareness (its timer)
      this.wake()
    }
  }
}

// ---------------------------------------------------------------------------
// Commands.

const getClient = (cmd) => {
  const c = clients.get(String(cmd.id))
  if (!c) throw new Error('unknown client: ' + cmd.id)
  return c
}

const waitReply = async (c, pred, cmd, describe) => {
  const ok = await c.waitFor(pred, timeoutMs(cmd))
  if (!ok) {
    throw new CommandError(
      c.destroyed ? 'client destroyed while waiting' : 'timeout waiting for ' + describe,
      { status: c.status, synced: c.provider.synced, closes: c.closes.slice() }
    )
  }
  return {}
}

const handlers = {
  connect (cmd) {
    const id = String(cmd.id)
    if (clients.has(id)) throw new Error('client exists: ' + id)
    const c = new Client(id, cmd)
    clients.set(id, c)
    return { self: c.doc.clientID }
  },

  wait_synced (cmd) {
    const c = getClient(cmd)
    return waitReply(c, () => c.provider.synced, cmd, 'synced')
  },

  insert (cmd) {
    const c = getClient(cmd)
    c.doc.getText(String(cmd.name ?? 'text')).insert(Number(cmd.index ?? 0), String(cmd.text))
    return {}
  },

  delete (cmd) {
    const c = getClient(cmd)
    c.doc.getText(String(cmd.name ?? 'text')).delete(Number(cmd.index ?? 0), Number(cmd.length))
    return {}
  },

  map_set (cmd) {
    const c = getClient(cmd)
    if (cmd.value === undefined) throw new Error('map_set needs "value"')
    c.doc.getMap(String(cmd.name ?? 'map')).set(String(cmd.key), cmd.value)
    return {}
  },

  get (cmd) {
    return getClient(cmd).snapshot(cmd)
  },

  async wait_text (cmd) {
    const c = getClient(cmd)
    const name = String(cmd.name ?? 'text')
    const want = String(cmd.equals)
    try {
      return await waitReply(c, () => c.doc.getText(name).toString() === want, cmd, `text ${name}`)
    } catch (e) {
      if (e instanceof CommandError) e.extra.value = c.doc.getText(name).toString()
      throw e
    }
  },

  async wait_map (cmd) {
    const c = getClient(cmd)
    const name = String(cmd.name ?? 'map')
    const key = String(cmd.key)
    const want = canonical(cmd.equals)
    try {
      return await waitReply(c, () => canonical(c.mapValue(name, key)) === want, cmd, `map ${name}[${key}]`)
    } catch (e) {
      if (e instanceof CommandError) {
        const v = c.mapValue(name, key)
        e.extra.value = v === undefined ? null : v
        e.extra.present = v !== undefined
      }
      throw e
    }
  },

  set_awareness (cmd) {
    const c = getClient(cmd)
    c.provider.awareness.setLocalState(cmd.state === undefined ? null : cmd.state)
    return {}
  },

  awareness (cmd) {
    const c = getClient(cmd)
    return { states: c.otherStates(), self: c.doc.clientID }
  },

  async wait_awareness (cmd) {
    const c = getClient(cmd)
    const n = Number(cmd.count)
    try {
      return await waitReply(c, () => Object.keys(c.otherStates()).length === n, cmd, `${n} awareness states`)
    } catch (e) {
      if (e instanceof CommandError) e.extra.states = c.otherStates()
      throw e
    }
  },

  wait_close (cmd) {
    // Satisfied by any close recorded since connect (past ones included).
    // Without "code", any server-side close (not one we initiated) counts.
    const c = getClient(cmd)
    const code = cmd.code == null ? null : Number(cmd.code)
    const pred = () => c.closes.some((x) => (code === null ? !x.local : x.code === code))
    return waitReply(c, pred, cmd, 'close ' + (code ?? 'any'))
  },

  wait_status (cmd) {
    const c = getClient(cmd)
    const want = String(cmd.status)
    return waitReply(c, () => c.status === want, cmd, 'status ' + want)
  },

  async wait_error (cmd) {
    // Wait for a 'connection-error' (e.g. "Unexpected server response: 403"
    // when the server refuses the HTTP upgrade), optionally one containing a
    // substring.
    const c = getClient(cmd)
    const sub = cmd.contains == null ? null : String(cmd.contains)
    const pred = () => c.connectionErrors.some((m) => sub === null || m.includes(sub))
    try {
      return await waitReply(c, pred, cmd, 'connection error')
    } catch (e) {
      if (e instanceof CommandError) e.extra.connectionErrorMessages = c.connectionErrors.slice()
      throw e
    }
  },

  disconnect (cmd) {
    getClient(cmd).provider.disconnect()
    return {}
  },

  connect_again (cmd) {
    getClient(cmd).provider.connect()
    return {}
  },

  destroy (cmd) {
    const c = getClient(cmd)
    clients.delete(c.id)
    c.destroy()
    return {}
  },

  stats (cmd) {
    return getClient(cmd).stats()
  }
}

// ---------------------------------------------------------------------------
// Main loop.

let exiting = false

const destroyAll = () => {
  for (const c of clients.values()) {
    try {
      c.destroy()
    } catch (e) {
      logErr('destroy failed for', c.id, e)
    }
  }
  clients.clear()
}

const shutdown = (code) => {
  if (exiting) return
  exiting = true
  destroyAll()
  // Give the close frames / awareness-removal messages a moment to flush.
  setTimeout(() => process.exit(code), 100).unref()
  // If nothing else keeps the loop alive, exit right away anyway.
  process.exitCode = code
}

const handleLine = async (line) => {
  if (line.trim() === '') return
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (e) {
    reply({ seq: null, ok: false, error: 'bad JSON: ' + e.message })
    return
  }
  if (cmd === null || typeof cmd !== 'object' || Array.isArray(cmd)) {
    reply({ seq: null, ok: false, error: 'command must be a JSON object' })
    return
  }
  const seq = cmd.seq === undefined ? null : cmd.seq
  if (cmd.cmd === 'exit') {
    reply({ seq, ok: true })
    shutdown(0)
    return
  }
  if (exiting) {
    reply({ seq, ok: false, error: 'driver is exiting' })
    return
  }
  const h = Object.prototype.hasOwnProperty.call(handlers, cmd.cmd) ? handlers[cmd.cmd] : null
  if (!h) {
    reply({ seq, ok: false, error: 'unknown command: ' + cmd.cmd })
    return
  }
  try {
    const res = await h(cmd)
    reply({ ...res, seq, ok: true })
  } catch (e) {
    const extra = e instanceof CommandError ? e.extra : {}
    reply({ ...extra, seq, ok: false, error: e && e.message ? e.message : String(e) })
  }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false })
rl.on('line', (line) => {
  handleLine(line).catch((e) => logErr('handler crashed:', e))
})
rl.on('close', () => shutdown(0))
// The reader went away (EPIPE): nobody can read replies any more.
process.stdout.on('error', (e) => {
  logErr('stdout error:', e)
  shutdown(0)
})
