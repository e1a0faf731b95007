#!/usr/bin/env node
// Reads one bench/run.sh results directory (<server>.jsonl written by yload,
// meta.json, failures.txt) and writes results.md (the side-by-side table:
// Kraken, each reference server, Kraken's ratio to each, and whether each
// target of the issue is met) and results.json (the same figures as data).
// Prints results.md. Exits 1 when a server failed to start or died, or a run
// was skipped, errored, left a client unconnected or failed to converge.
//
//   node summarize.mjs bench/results/<UTC time>
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const dir = process.argv[2]
if (!dir) {
  console.error('usage: node summarize.mjs RESULTS_DIR')
  process.exit(2)
}

const KRAKEN = 'kraken'
const REF = 'ywebsocket' // the targets are ratios against this one
const NAMES = { kraken: 'Kraken', ywebsocket: 'y-websocket', hocuspocus: 'Hocuspocus', relay: 'relay' }
const name = (s) => NAMES[s] || s

const readJson = (file, fallback) => {
  try { return JSON.parse(readFileSync(file, 'utf8')) } catch { return fallback }
}
const meta = readJson(join(dir, 'meta.json'), {})

// ------------------------------------------------------------ input

const rows = []
for (const file of readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort()) {
  for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
    if (!line.trim()) continue
    try { rows.push(JSON.parse(line)) } catch { rows.push({ server: file.replace(/\.jsonl$/, ''), label: '?', error: `unreadable line in ${file}` }) }
  }
}

let servers = (meta.servers || '').split(/\s+/).filter(Boolean)
for (const r of rows) if (!servers.includes(r.server)) servers.push(r.server)
servers = [...servers.filter((s) => s === KRAKEN), ...servers.filter((s) => s !== KRAKEN)]
const others = servers.filter((s) => s !== KRAKEN)

const failures = []
const failFile = join(dir, 'failures.txt')
if (existsSync(failFile)) {
  for (const line of readFileSync(failFile, 'utf8').split('\n')) {
    if (!line.trim()) continue
    const [server, where, ...msg] = line.split('\t')
    failures.push({ server, label: where, problem: msg.join(' ') })
  }
}

const labels = []
const byKey = new Map()
for (const r of rows) {
  if (!labels.includes(r.label)) labels.push(r.label)
  const key = `${r.server}\t${r.label}`
  if (!byKey.has(key)) byKey.set(key, [])
  byKey.get(key).push(r)
}
const entries = (server, label) => byKey.get(`${server}\t${label}`) || []

// ------------------------------------------------------------ correctness

for (const r of rows) {
  const fail = (problem) => failures.push({ server: r.server, label: r.label, problem })
  if (r.skipped) { fail(`skipped: ${r.skipped}`); continue }
  if (r.error) fail(r.error)
  else if (r.rc) fail(`yload exited with status ${r.rc}`)
  if (r.connect && r.connect.failed) fail(`${r.connect.failed} of ${r.connect.connections} clients did not finish their first sync (first error: ${r.connect.firstError})`)
  if (r.fanout) {
    if (r.fanout.error) fail(`fanout: ${r.fanout.error}`)
    else if (!r.fanout.converged) {
      const bad = Object.entries(r.fanout.convergence || {}).filter(([, v]) => !v).map(([k]) => k)
      fail(`did not converge (failed: ${bad.join(', ')}; ${r.fanout.deliveries}/${r.fanout.deliveriesExpected} deliveries)`)
    }
  }
  for (const b of r.bigdoc || []) {
    if (b.error) fail(`bigdoc ${b.mb} MB: ${b.error}`)
    else if (!b.uploadComplete) fail(`bigdoc ${b.mb} MB: the watcher never received the whole document`)
    else if (!b.joinsComplete) fail(`bigdoc ${b.mb} MB: a fresh client did not receive the whole document`)
  }
  if (r.idle) {
    if (r.idle.error) fail(`idle: ${r.idle.error}`)
    else if (r.idle.failed || r.idle.held < r.idle.connections) fail(`idle: ${r.idle.failed} of ${r.idle.connections} connections failed, ${r.idle.held} held`)
  }
}

// ------------------------------------------------------------ figures

const median = (xs) => {
  const s = xs.filter((x) => x != null && Number.isFinite(x)).sort((a, b) => a - b)
  if (!s.length) return null
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const fmt = (x) => {
  if (x == null || !Number.isFinite(x)) return 'n/a'
  const a = Math.abs(x)
  return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : x.toFixed(2)
}
const usable = (rs) => rs.filter((r) => !r.skipped && !r.error)
const whyMissing = (rs) => {
  const r = rs.find((x) => x.skipped || x.error)
  return r ? (r.skipped ? 'skipped' : 'error') : 'n/a'
}

const figures = []
// better: 'lower' | 'higher' | null (no ratio). target: see evaluate().
function numeric (label, figure, better, pick, target) {
  const values = {}
  const shown = {}
  for (const s of servers) {
    const rs = entries(s, label)
    const v = median(usable(rs).map(pick).filter((x) => x != null))
    values[s] = v
    shown[s] = v == null ? whyMissing(rs) : fmt(v)
  }
  figures.push({ scenario: label, figure, better, values, shown, target })
}
function counted (label, figure, okOf, target) {
  // okOf(entry) -> [ok, total]; shown as ok/total summed over the runs
  const values = {}
  const shown = {}
  for (const s of servers) {
    const rs = entries(s, label)
    const counts = usable(rs).map(okOf).filter(Boolean)
    if (!counts.length) { values[s] = null; shown[s] = whyMissing(rs); continue }
    const ok = counts.reduce((a, c) => a + c[0], 0)
    const total = counts.reduce((a, c) => a + c[1], 0)
    values[s] = { ok, total }
    shown[s] = `${ok}/${total}`
  }
  figures.push({ scenario: label, figure, better: null, values, shown, target })
}
function text (label, figure, pick) {
  const shown = {}
  for (const s of servers) {
    const r = usable(entries(s, label))[0]
    shown[s] = (r && pick(r)) || whyMissing(entries(s, label))
  }
  figures.push({ scenario: label, figure, better: null, values: {}, shown })
}

for (const label of labels) {
  const all = servers.flatMap((s) => entries(s, label))
  if (/^connect\b/.test(label)) {
    counted(label, 'clients that finished their first sync', (r) => r.connect && [r.connect.connections - r.connect.failed, r.connect.connections], { kind: 'allOk', text: 'every client syncs' })
    numeric(label, 'connect → synced p50, ms', 'lower', (r) => r.connect && r.connect.syncMs.p50)
    numeric(label, 'connect → synced p99, ms', 'lower', (r) => r.connect && r.connect.syncMs.p99)
    numeric(label, 'connections/s', 'higher', (r) => r.connect && r.connect.connectionsPerSec)
  } else if (/^(paced|flat)\b/.test(label)) {
    const paced = label.startsWith('paced')
    const f = (r) => r.fanout && !r.fanout.error ? r.fanout : null
    numeric(label, 'delivered updates/s', 'higher', (r) => f(r) && f(r).deliveredPerSec)
    numeric(label, 'latency p50, ms', 'lower', (r) => f(r) && f(r).latencyMs.p50)
    numeric(label, 'latency p99, ms', 'lower', (r) => f(r) && f(r).latencyMs.p99, paced ? { kind: 'ratio', max: 1, stretch: 0.5, text: 'p99 <= reference (stretch: half)' } : undefined)
    numeric(label, 'latency max, ms', 'lower', (r) => f(r) && f(r).latencyMs.max)
    numeric(label, 'server CPU per delivered update, µs', 'lower',
      (r) => f(r) && f(r).serverCpuS != null && f(r).deliveries > 0 ? (f(r).serverCpuS / f(r).deliveries) * 1e6 : null,
      paced ? undefined : { kind: 'ratio', max: 2 / 3, text: 'CPU/update <= 2/3 of reference' })
    counted(label, 'runs converged', (r) => [r.fanout && r.fanout.converged ? 1 : 0, 1], { kind: 'allOk', text: 'converged' })
  } else if (/^bigdoc\b/.test(label)) {
    const sizes = [...new Set(all.flatMap((r) => (r.bigdoc || []).map((b) => b.mb)))].sort((a, b) => a - b)
    for (const mb of sizes) {
      const b = (r) => (r.bigdoc || []).find((x) => x.mb === mb)
      const scenario = `${label} ${mb} MB`
      for (const s of servers) byKey.set(`${s}\t${scenario}`, entries(s, label))
      numeric(scenario, 'upload → a watcher has it all, ms', 'lower', (r) => b(r) && b(r).uploadComplete ? b(r).uploadMs : null)
      numeric(scenario, 'fresh join → full text, p50 ms', 'lower', (r) => b(r) && b(r).joinsComplete ? b(r).joinMs.p50 : null,
        mb >= 10 ? { kind: 'ratio', max: 1, text: '10 MB join <= reference' } : undefined)
      counted(scenario, 'fresh joins that got the whole document', (r) => b(r) && b(r).joinMs ? [b(r).joinsComplete ? b(r).joinMs.n : 0, Math.max(1, b(r).joinMs.n)] : [0, 1], { kind: 'allOk', text: 'every join complete' })
    }
  } else if (/^idle\b/.test(label)) {
    const big = all.some((r) => r.idle && r.idle.connections >= 10000)
    numeric(label, 'server RSS per idle connection, bytes', 'lower', (r) => r.idle && !r.idle.error ? r.idle.bytesPerConnection : null,
      { kind: 'ratio', max: 1, text: 'bytes/conn <= reference' })
    counted(label, 'connections held', (r) => r.idle && !r.idle.error ? [r.idle.held ?? 0, r.idle.connections] : null,
      { kind: 'allOk', text: big ? '10,000 idle connections held' : 'all held' })
    text(label, 'server RSS before → open → after close, MB', (r) => r.idle && !r.idle.error ? `${fmt(r.idle.rssBeforeMB)} → ${fmt(r.idle.rssOpenMB)} → ${fmt(r.idle.rssAfterCloseMB)}` : null)
  }
}

// ------------------------------------------------------------ ratios and targets

const ratio = (fig, other) => {
  const k = fig.values[KRAKEN]
  const o = fig.values[other]
  if (fig.better == null || k == null || o == null || o === 0) return null
  return k / o
}

function evaluate (fig) {
  const t = fig.target
  if (!t || !servers.includes(KRAKEN)) return null
  if (t.kind === 'allOk') {
    const v = fig.values[KRAKEN]
    if (v == null) return { met: false, text: `**NOT met** (${fig.shown[KRAKEN]})`, target: t.text }
    const met = v.ok === v.total
    return { met, text: met ? 'met' : `**NOT met** (${v.ok}/${v.total})`, target: t.text }
  }
  if (!servers.includes(REF)) return null
  const r = ratio(fig, REF)
  if (r == null) {
    const missing = fig.values[KRAKEN] == null ? name(KRAKEN) : name(REF)
    return { met: false, text: `**NOT met** (no ${missing} figure)`, target: t.text }
  }
  const bound = t.max === 1 ? '1' : t.max.toFixed(2)
  const met = r <= t.max + 1e-9
  let out = met ? `met (${r.toFixed(2)} <= ${bound})` : `**NOT met** (${r.toFixed(2)} > ${bound})`
  if (met && t.stretch != null) out += r <= t.stretch ? '; stretch met' : `; stretch (<= ${t.stretch}) not met`
  return { met, text: out, target: t.text }
}
for (const fig of figures) fig.result = evaluate(fig)

// ------------------------------------------------------------ output

const out = []
const mode = meta.mode === 'smoke' ? ' (smoke)' : ''
out.push(`# Kraken vs reference Yjs servers${mode}`)
out.push('')
const mem = meta.memTotalKiB ? `${(meta.memTotalKiB / 1048576).toFixed(1)} GiB` : '?'
out.push(`- date: ${meta.date || '?'} (UTC); command: \`${meta.command || '?'}\`${meta.reps ? `, REPS=${meta.reps}` : ''}; wall time ${process.env.BENCH_ELAPSED_S || '?'} s`)
out.push(`- machine: ${meta.cpus || '?'} CPUs (${meta.cpuModel || '?'}), ${mem}, Linux ${meta.kernel || '?'}, load average at start ${meta.loadAtStart || '?'}, open-file limit ${meta.fdLimit || '?'}; the load generator shares the CPUs with the server`)
out.push(`- Kraken ${meta.kraken || '?'} on ${meta.python || '?'}; y-websocket = @y/websocket-server 0.1.1; Hocuspocus = @hocuspocus/server 3.4.4; load generator yload.mjs on node ${meta.node || '?'}`)
out.push('- figures are medians over the repetitions; ratios are Kraken ÷ the other server; "target" compares Kraken with y-websocket as the issue sets it')
out.push('')

const targets = figures.filter((f) => f.result)
const met = targets.filter((f) => f.result.met).length
out.push(`## Targets: ${met} of ${targets.length} met`)
out.push('')
const missed = targets.filter((f) => !f.result.met)
if (missed.length) {
  for (const f of missed) out.push(`- not met: ${f.scenario}, ${f.figure} (${f.result.target}): ${f.result.text.replace(/\*\*/g, '')}`)
  out.push('')
}

out.push(failures.length ? `## Problems in this run (${failures.length})` : '## Problems in this run: none')
out.push('')
for (const f of failures) out.push(`- ${name(f.server)}, ${f.label}: ${f.problem}`)
if (failures.length) out.push('')

out.push('## Figures')
out.push('')
const head = ['scenario', 'figure', ...servers.map(name), ...others.map((o) => `${name(KRAKEN)} ÷ ${name(o)}`), `target (vs ${name(REF)})`]
if (!servers.includes(KRAKEN)) head.splice(2 + servers.length, others.length)
out.push(`| ${head.join(' | ')} |`)
out.push(`|${head.map(() => '---').join('|')}|`)
for (const fig of figures) {
  const cells = [fig.scenario, fig.figure + (fig.better ? (fig.better === 'lower' ? ' (lower is better)' : ' (higher is better)') : '')]
  for (const s of servers) cells.push(fig.shown[s])
  if (servers.includes(KRAKEN)) for (const o of others) { const r = ratio(fig, o); cells.push(r == null ? '' : r.toFixed(2)) }
  cells.push(fig.result ? fig.result.text : '')
  out.push(`| ${cells.join(' | ')} |`)
}
out.push('')

const md = out.join('\n')
writeFileSync(join(dir, 'results.md'), md + '\n')
writeFileSync(join(dir, 'results.json'), JSON.stringify({
  meta,
  elapsedS: Number(process.env.BENCH_ELAPSED_S) || null,
  servers,
  reference: REF,
  targets: { met, total: targets.length },
  figures: figures.map((f) => ({
    scenario: f.scenario,
    figure: f.figure,
    better: f.better,
    values: f.values,
    shown: f.shown,
    ratios: Object.fromEntries(others.map((o) => [o, ratio(f, o)])),
    target: f.result ? { what: f.result.target, met: f.result.met, text: f.result.text } : null
  })),
  failures,
  runs: rows
}, null, 2) + '\n')
console.log(md)
process.exit(failures.length ? 1 : 0)
