// A real Kraken for tests: `twistd kraken` in a child process on 127.0.0.1,
// on a port the kernel picks, with a data directory of its own; and helpers
// to register apps and wait for conditions with deadlines.

import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const ADMIN_TOKEN = 'test-admin-token-0123456789'
export const DEPLOYMENT_TOKEN = 'test-deployment-token-0123456789'

const LISTENING = /Kraken listening on 127\.0\.0\.1:(\d+)/

/** The Python that has Kraken installed: $KRAKEN_PYTHON, else python3. */
export function krakenPython() {
  return process.env.KRAKEN_PYTHON || 'python3'
}

/**
 * Start `twistd kraken`; resolves once it listens.
 * @param {{args?: string[], listen?: string, timeoutMs?: number}} [options]
 */
export async function startKraken(options = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'kraken-js-test-'))
  const listen = options.listen ?? 'tcp:0:interface=127.0.0.1'
  const args = [
    '-c',
    'from twisted.scripts.twistd import run; run()',
    '--nodaemon',
    '--pidfile=',
    '--logfile=-',
    'kraken',
    '--listen',
    listen,
    '--data-dir',
    dataDir,
    ...(options.args ?? []),
  ]
  const child = spawn(krakenPython(), args, {
    cwd: dataDir,
    env: { ...process.env, KRAKEN_ADMIN_TOKEN: ADMIN_TOKEN, KRAKEN_TOKEN: DEPLOYMENT_TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  // Should this process end without stopping the server, take it along
  // (scripts/test.sh also runs the tests in a PID namespace of their own).
  const killOnExit = () => child.kill('SIGKILL')
  process.once('exit', killOnExit)
  child.once('exit', () => process.removeListener('exit', killOnExit))
  let log = ''
  const onData = (chunk) => {
    log += chunk.toString()
  }
  child.stdout.on('data', onData)
  child.stderr.on('data', onData)

  const server = {
    child,
    dataDir,
    port: 0,
    get log() {
      return log
    },
    get httpUrl() {
      return `http://127.0.0.1:${this.port}`
    },
    get wsUrl() {
      return `ws://127.0.0.1:${this.port}`
    },
    /** Register an app; resolves with its token. */
    async registerApp(appId, allowedOrigins = []) {
      const response = await fetch(`${this.httpUrl}/api/apps`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ app_id: appId, name: appId, allowed_origins: allowedOrigins }),
        signal: AbortSignal.timeout(10000),
      })
      const body = await response.json()
      if (response.status !== 201) {
        throw new Error(`POST /api/apps answered ${response.status}: ${JSON.stringify(body)}`)
      }
      return body.token
    },
    /** Stop the server and remove its data directory. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 10000)
        await exited
        clearTimeout(timer)
      }
      rmSync(dataDir, { recursive: true, force: true })
    },
  }

  try {
    server.port = await waitFor(
      () => {
        if (child.exitCode !== null) {
          throw new Error(`Kraken exited with ${child.exitCode}:\n${log}`)
        }
        const match = LISTENING.exec(log)
        return match ? Number(match[1]) : null
      },
      { timeoutMs: options.timeoutMs ?? 30000, what: 'Kraken to listen' },
    )
  } catch (error) {
    await server.stop()
    throw new Error(`${error.message}\n${log}`)
  }
  return server
}

/**
 * Poll `check` until it returns something other than null, undefined or
 * false; fails after the deadline.
 */
export async function waitFor(check, { timeoutMs = 10000, intervalMs = 20, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== null && value !== undefined && value !== false) {
      return value
    }
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`)
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

/** Resolve with the first event of `client` that matches, within the deadline. */
export function nextEvent(client, match, { timeoutMs = 10000, what } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off()
      reject(new Error(`Timed out after ${timeoutMs} ms waiting for ${what ?? 'an event'}`))
    }, timeoutMs)
    const off = client.on((event) => {
      if (match(event)) {
        clearTimeout(timer)
        off()
        resolve(event)
      }
    })
  })
}

/** Record every event of a client. */
export function record(client) {
  const events = []
  client.on((event) => events.push(event))
  return events
}

/**
 * A TCP proxy on 127.0.0.1 in front of a port, to break connections the way
 * networks do. `drop()` cuts the client side of every current connection
 * while the server side stays open and silent (a laptop that changed
 * networks); `freeze()` keeps both sides open but passes nothing more (a
 * dead route). New connections are passed through normally.
 */
export async function startProxy(targetPort) {
  const pairs = new Set()
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1')
    const pair = { client, upstream, passing: true }
    pairs.add(pair)
    client.on('data', (data) => {
      if (pair.passing) {
        upstream.write(data)
      }
    })
    upstream.on('data', (data) => {
      if (pair.passing) {
        client.write(data)
      }
    })
    client.on('error', () => undefined)
    upstream.on('error', () => undefined)
    client.on('close', () => {
      if (pair.passing) {
        upstream.destroy()
      }
    })
    upstream.on('close', () => {
      pairs.delete(pair)
      if (pair.passing) {
        client.destroy()
      }
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: server.address().port,
    get url() {
      return `ws://127.0.0.1:${this.port}`
    },
    drop() {
      for (const pair of pairs) {
        pair.passing = false
        pair.client.destroy()
      }
    },
    /** How many connections are open on the server side. */
    get openUpstreams() {
      return Array.from(pairs).filter((pair) => !pair.upstream.destroyed).length
    },
    freeze() {
      for (const pair of pairs) {
        pair.passing = false
      }
    },
    async close() {
      for (const pair of pairs) {
        pair.client.destroy()
        pair.upstream.destroy()
      }
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
