// Build the demo served by `twistd kraken --demo`: exactly two files in
// kraken/demo_static/, the page (index.html) and the client bundled with
// Yjs (kraken-client.js, ESM, minified). Also reports the sizes of the
// client alone and of the bundle, minified and gzipped.
//
// With --check, write nothing and fail if the committed files differ from
// what the sources build (scripts/test.sh runs this).

import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'

import * as esbuild from 'esbuild'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const out = resolve(root, '..', '..', 'kraken', 'demo_static')
const check = process.argv.includes('--check')

const common = {
  bundle: true,
  format: 'esm',
  minify: true,
  target: 'es2020',
  legalComments: 'none',
  logLevel: 'warning',
  write: false,
}

async function bundle(entry, options = {}) {
  const result = await esbuild.build({ ...common, entryPoints: [join(root, entry)], ...options })
  return Buffer.from(result.outputFiles[0].contents)
}

const page = readFileSync(join(root, 'demo', 'index.html'))
if (!page.includes('<!--KRAKEN_DEMO_CONFIG-->')) {
  throw new Error('demo/index.html lacks the <!--KRAKEN_DEMO_CONFIG--> placeholder')
}
const files = {
  'index.html': page,
  'kraken-client.js': await bundle('demo/kraken-client.ts'),
}

if (check) {
  const stale = Object.entries(files).filter(
    ([name, content]) => !existsSync(join(out, name)) || !readFileSync(join(out, name)).equals(content),
  )
  const extra = existsSync(out) ? readdirSync(out).filter((name) => !(name in files)) : []
  if (stale.length > 0 || extra.length > 0) {
    console.error(
      `kraken/demo_static is out of date (${[...stale.map(([n]) => n), ...extra].join(', ')}); ` +
        'run "npm run build:demo" in clients/js and commit the result.',
    )
    process.exit(1)
  }
  console.log('kraken/demo_static is up to date.')
  process.exit(0)
}

mkdirSync(out, { recursive: true })
for (const name of readdirSync(out)) {
  if (!(name in files)) {
    rmSync(join(out, name), { recursive: true, force: true })
  }
}
for (const [name, content] of Object.entries(files)) {
  writeFileSync(join(out, name), content)
}

function sizes(bytes) {
  const gzipped = gzipSync(bytes, { level: 9 }).length
  return `${(bytes.length / 1024).toFixed(1)} KiB minified, ${(gzipped / 1024).toFixed(1)} KiB gzipped`
}

const external = ['yjs', 'y-protocols/*']
console.log(`Wrote ${Object.keys(files).join(' and ')} to ${out}`)
console.log(`  @kraken/client (signaling and calls): ${sizes(await bundle('src/index.ts', { external }))}`)
console.log(`  @kraken/client/yjs, without yjs and y-protocols: ${sizes(await bundle('src/yjs.ts', { external }))}`)
console.log(`  kraken-client.js (the client with yjs and y-protocols): ${sizes(files['kraken-client.js'])}`)
