// The browser tests' world: a network namespace with only loopback (made by
// scripts/test.sh), a real Kraken, a tiny static server for the test pages,
// and Debian's Chromium driven by playwright-core. Everything a test starts
// is stopped by the `close()` it gets back.

import { createServer } from 'node:http'
import { after, afterEach, before } from 'node:test'
import { mkdirSync, readFileSync, readdirSync, copyFileSync, existsSync, symlinkSync, rmSync } from 'node:fs'
import net from 'node:net'
import { networkInterfaces } from 'node:os'
import { dirname, extname, join, normalize, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import * as esbuild from 'esbuild'
import { chromium } from 'playwright-core'

import { startKraken, waitFor } from '../support/kraken.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
export const PACKAGE_ROOT = resolve(HERE, '..', '..')
const BUILD = join(PACKAGE_ROOT, '.test-build')
const PAGES = join(BUILD, 'pages')

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'

export const CHROMIUM_ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  // Host candidates as plain addresses: there is no multicast DNS here.
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
]

/**
 * Refuse to run outside a network namespace that has only loopback, where
 * every ICE candidate is 127.0.0.1 and nothing can leave the machine.
 */
export function assertIsolated() {
  const names = Object.keys(networkInterfaces())
  if (names.some((name) => name !== 'lo')) {
    throw new Error(
      `The browser tests run only in a network namespace with nothing but loopback ` +
        `(found ${names.join(', ')}); run them through scripts/test.sh.`,
    )
  }
}

let built = null

/** Bundle the test pages once per process, against the built package (dist/). */
export function buildPages() {
  built ??= (async () => {
    if (!existsSync(join(PACKAGE_ROOT, 'dist', 'index.js'))) {
      throw new Error('Build the package first (npm run build).')
    }
    rmSync(PAGES, { recursive: true, force: true })
    mkdirSync(PAGES, { recursive: true })
    // Resolve '@kraken/client' through its package.json "exports", as an app would.
    const modules = join(BUILD, 'node_modules', '@kraken')
    mkdirSync(modules, { recursive: true })
    if (!existsSync(join(modules, 'client'))) {
      symlinkSync(PACKAGE_ROOT, join(modules, 'client'), 'dir')
    }
    const source = join(HERE, 'pages')
    const entries = readdirSync(source).filter((name) => /\.(ts|tsx)$/.test(name))
    await esbuild.build({
      entryPoints: entries.map((name) => join(source, name)),
      outdir: PAGES,
      bundle: true,
      format: 'esm',
      target: 'es2020',
      jsx: 'automatic',
      nodePaths: [join(BUILD, 'node_modules'), join(PACKAGE_ROOT, 'node_modules')],
      define: { 'process.env.NODE_ENV': '"development"' },
      logLevel: 'warning',
    })
    for (const name of readdirSync(source).filter((n) => n.endsWith('.html'))) {
      copyFileSync(join(source, name), join(PAGES, name))
    }
  })()
  return built
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
}

/** Serve a directory on 127.0.0.1. */
export async function startStatic(root) {
  const server = createServer((request, response) => {
    const path = normalize(decodeURIComponent(new URL(request.url, 'http://x').pathname))
    if (path === '/favicon.ico') {
      response.writeHead(204).end()
      return
    }
    const file = join(root, path.endsWith('/') ? `${path}index.html` : path)
    if (!file.startsWith(root) || !existsSync(file)) {
      response.writeHead(404).end('not found')
      return
    }
    response.writeHead(200, {
      'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
      'Cache-Control': 'no-store',
    })
    response.end(readFileSync(file))
  })
  await new Promise((resolveListen) => server.listen(0, '127.0.0.1', resolveListen))
  const { port } = server.address()
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolveClose) => {
        server.closeAllConnections?.()
        server.close(resolveClose)
      }),
  }
}

/** A TCP port free right now on 127.0.0.1 (in a fresh namespace, nothing races for it). */
export async function freePort() {
  const server = net.createServer()
  await new Promise((resolveListen) => server.listen(0, '127.0.0.1', resolveListen))
  const { port } = server.address()
  await new Promise((resolveClose) => server.close(resolveClose))
  return port
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30000,
  })
}

/**
 * Kraken, the test pages and a browser, ready for a test file.
 * `token` is an app token whose app admits the static server's origin.
 */
export async function startWorld() {
  assertIsolated()
  const stops = []
  const close = async () => {
    for (const stop of stops.reverse()) {
      await stop().catch(() => undefined)
    }
  }
  try {
    await buildPages()
    const pages = await startStatic(PAGES)
    stops.push(() => pages.close())
    const kraken = await startKraken()
    stops.push(() => kraken.stop())
    const token = await kraken.registerApp('browser-tests', [pages.origin])
    const browser = await launchBrowser()
    stops.push(() => browser.close())
    return { kraken, pages, browser, token, close }
  } catch (error) {
    await close()
    throw error
  }
}

/**
 * One world for a test file, started before its first test and closed after
 * its last, and a fresh browser context per test, closed after it.
 * `shared.world` is the world; `await shared.newContext()` the context.
 */
export function worldPerFile() {
  const shared = {
    world: null,
    context: null,
    async newContext() {
      shared.context = await shared.world.browser.newContext()
      return shared.context
    },
  }
  before(async () => {
    shared.world = await startWorld()
  })
  after(async () => {
    await shared.world?.close()
  })
  afterEach(async () => {
    await shared.context?.close()
    shared.context = null
  })
  return shared
}

/** Open a test page with its configuration in the query string. */
export async function openPage(context, world, page, params) {
  const tab = await context.newPage()
  const errors = []
  tab.on('pageerror', (error) => errors.push(String(error)))
  tab.on('console', (message) => {
    if (message.type() === 'error') {
      errors.push(message.text())
    }
  })
  tab.errors = errors
  const query = new URLSearchParams({ url: world.kraken.wsUrl, token: world.token, ...params })
  await tab.goto(`${world.pages.origin}/${page}?${query}`, { timeout: 15000 })
  return tab
}

/** Wait, with a deadline, until `fn` evaluated in the page is truthy; returns its value. */
export async function pageWait(tab, fn, arg, { timeoutMs = 15000, what } = {}) {
  try {
    const handle = await tab.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 50 })
    return await handle.jsonValue()
  } catch (error) {
    throw new Error(`${what ?? 'page condition'}: ${error.message.split('\n')[0]}`)
  }
}

/**
 * Whether the <video> plays: it has a picture and its time advances.
 */
export async function assertVideoPlays(tab, selector, { timeoutMs = 15000 } = {}) {
  await pageWait(
    tab,
    (sel) => {
      const video = document.querySelector(sel)
      return video && video.videoWidth > 0 && video.currentTime > 0
    },
    selector,
    { timeoutMs, what: `${selector} to show a picture` },
  )
  const start = await tab.evaluate((sel) => document.querySelector(sel).currentTime, selector)
  await pageWait(
    tab,
    ([sel, t]) => document.querySelector(sel).currentTime > t + 0.3,
    [selector, start],
    { timeoutMs, what: `${selector} to advance` },
  )
  return tab.evaluate((sel) => {
    const video = document.querySelector(sel)
    return { width: video.videoWidth, height: video.videoHeight, time: video.currentTime }
  }, selector)
}

export { waitFor }
