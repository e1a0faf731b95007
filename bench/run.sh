#!/usr/bin/env bash
# Kraken against the reference Yjs servers, side by side, in one run.
#
#   bash bench/run.sh            # full run: Kraken, y-websocket, Hocuspocus (< 15 min)
#   bash bench/run.sh --smoke    # seconds: tiny scenarios, Kraken and y-websocket only
#
# Installs the pinned npm packages (npm ci in bench/), starts each server on
# 127.0.0.1 on a port picked at run time, drives them with the same yload
# scenarios, stops exactly the processes it started (by PID: TERM, then KILL
# after 5 s) and writes bench/results/<UTC time>/results.md (the table),
# results.json and the raw yload JSON lines (<server>.jsonl), with the server
# logs in logs/. See bench/README.md.
#
# Environment:
#   KRAKEN_PYTHON  python with Kraken and its dependencies installed (default python3)
#   SERVERS        servers to measure (default "kraken ywebsocket hocuspocus";
#                  smoke: "kraken ywebsocket")
#   REPS           repetitions of the fan-out matrix (default 3)
#   TOTAL_UPDATES  updates written per fan-out run, all clients together (default 2000)
#   PACED_RATE     aggregate updates/s of a paced run (default 400)
#   IDLE_BIG       the large idle count (default 10000)
#   BUDGET_S       wall-clock budget in seconds; runs that would start later
#                  are skipped and reported (default 840; smoke 100)
#   OUT            output directory (default bench/results/<UTC time>)
#   SMOKE=1        same as --smoke
#
# Exit status: 0 when every server started and every run finished with every
# client connected and converged; 1 otherwise (whether Kraken meets its
# performance targets is in the table, not in the exit status); 2 for a
# missing prerequisite.
set -u

T0=$(date +%s)
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")

SMOKE=${SMOKE:-0}
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$SMOKE" = 1 ]; then
  SERVERS=${SERVERS:-"kraken ywebsocket"}
  BUDGET_S=${BUDGET_S:-100}
else
  SERVERS=${SERVERS:-"kraken ywebsocket hocuspocus"}
  BUDGET_S=${BUDGET_S:-840}
fi
REPS=${REPS:-3}
TOTAL_UPDATES=${TOTAL_UPDATES:-2000}
PACED_RATE=${PACED_RATE:-400}
IDLE_BIG=${IDLE_BIG:-10000}
KRAKEN_PYTHON=${KRAKEN_PYTHON:-python3}
OUT=${OUT:-$BENCH/results/$(date -u +%Y%m%dT%H%M%SZ)}

say () { echo "[bench $(( $(date +%s) - T0 ))s] $*" >&2; }
die () { echo "run.sh: $*" >&2; exit 2; }

# ------------------------------------------------------------ prerequisites

command -v node >/dev/null || die "node (>= 20) is not on PATH"
command -v npm >/dev/null || die "npm is not on PATH"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "node >= 20 needed, found $(node --version)"
case " $SERVERS " in
  *" kraken "*)
    (cd "$ROOT" && "$KRAKEN_PYTHON" -c "import kraken, twisted, pycrdt, autobahn") 2>/dev/null \
      || die "KRAKEN_PYTHON=$KRAKEN_PYTHON cannot import kraken and its dependencies (pip install . first)" ;;
esac

mkdir -p "$OUT/logs" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
FAILURES=$OUT/failures.txt
: >"$FAILURES"
TMPROOT=$(mktemp -d "${TMPDIR:-/tmp}/kraken-bench.XXXXXX")

# The idle scenario holds IDLE_BIG sockets in the load generator and as many
# in the server, each process on its own descriptor limit; the servers started
# below inherit this one.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
FD_LIMIT=$(ulimit -n)
if [ "$FD_LIMIT" != unlimited ] && [ "$SMOKE" != 1 ] && [ "$FD_LIMIT" -lt $((IDLE_BIG + 1024)) ]; then
  say "open-file limit is $FD_LIMIT (hard $(ulimit -Hn)): too low for $IDLE_BIG idle connections;" \
      "idle-$IDLE_BIG will run with $((FD_LIMIT - 1024))"
  echo -e "bench\tsetup\topen-file limit $FD_LIMIT too low for $IDLE_BIG idle connections" >>"$FAILURES"
  IDLE_BIG=$((FD_LIMIT - 1024))
fi

# ------------------------------------------------------------ servers

declare -A PID URL PROTO QUERY DEAD
ALL_PIDS=()

stop_pid () {  # pid: TERM, up to 5 s, then KILL; only a process this script started
  local pid=$1
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid did not stop on TERM within 5 s: KILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  return 0
}

cleanup () {
  local i
  # Newest first: a running load generator before the servers it drives.
  for (( i=${#ALL_PIDS[@]}-1; i>=0; i-- )); do stop_pid "${ALL_PIDS[$i]}"; done
  ALL_PIDS=()
  rm -rf "$TMPROOT"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port () {
  node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })'
}

wait_port () {  # port pid: bounded wait for a TCP accept on 127.0.0.1:port
  for _ in $(seq 1 150); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

start_kraken () {  # phase
  local log=$OUT/logs/kraken-$1.log data port="" token admin
  data=$(mktemp -d "$TMPROOT/kraken-data.XXXXXX")
  admin=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  (cd "$ROOT" && KRAKEN_ADMIN_TOKEN=$admin KRAKEN_TOKEN=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n') \
    exec "$KRAKEN_PYTHON" -c "from twisted.scripts.twistd import run; run()" \
      -n --pidfile= --logfile=- kraken --listen tcp:0:interface=127.0.0.1 --data-dir "$data") \
    >"$log" 2>&1 &
  PID[kraken]=$!; ALL_PIDS+=("$!")
  for _ in $(seq 1 300); do
    port=$(sed -n 's/.*Kraken listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log" | head -n1)
    [ -n "$port" ] && break
    kill -0 "${PID[kraken]}" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$port" ] || return 1
  token=$(node -e '
    const [base, admin] = process.argv.slice(1)
    fetch(base + "/api/apps", {
      method: "POST",
      headers: { Authorization: "Bearer " + admin, "Content-Type": "application/json" },
      body: JSON.stringify({ app_id: "bench", name: "bench", allowed_origins: [] }),
      signal: AbortSignal.timeout(10000)
    }).then(async (r) => {
      const body = await r.json()
      if (r.status !== 201) { console.error("POST /api/apps:", r.status, JSON.stringify(body)); process.exit(1) }
      console.log(body.token)
    }).catch((e) => { console.error("POST /api/apps:", e.message); process.exit(1) })
  ' "http://127.0.0.1:$port" "$admin" 2>>"$log") || return 1
  URL[kraken]=ws://127.0.0.1:$port; PROTO[kraken]=y-websocket; QUERY[kraken]=token=$token
}

start_node_server () {  # name phase script protocol
  local log=$OUT/logs/$1-$2.log port
  port=$(free_port) || return 1
  (cd "$BENCH" && HOST=127.0.0.1 PORT=$port exec node "$3") >"$log" 2>&1 &
  PID[$1]=$!; ALL_PIDS+=("$!")
  wait_port "$port" "${PID[$1]}" || return 1
  URL[$1]=ws://127.0.0.1:$port; PROTO[$1]=$4; QUERY[$1]=""
}

start_server () {  # name phase
  DEAD[$1]=""
  case $1 in
    kraken) start_kraken "$2" ;;
    ywebsocket) start_node_server ywebsocket "$2" node_modules/@y/websocket-server/src/server.js y-websocket ;;
    hocuspocus) start_node_server hocuspocus "$2" anchors/hocuspocus-server.mjs hocuspocus ;;
    *) echo "unknown server $1" >>"$OUT/logs/$1-$2.log"; return 1 ;;
  esac
}

forget_pid () {  # pid: no longer ours to stop
  local keep=() pid
  for pid in "${ALL_PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
  ALL_PIDS=("${keep[@]}")
}

stop_server () {  # name
  if [ -n "${PID[$1]:-}" ]; then
    stop_pid "${PID[$1]}"
    forget_pid "${PID[$1]}"
  fi
  PID[$1]=""
}

# ------------------------------------------------------------ runs

record () {  # server label json-object-body (without braces)
  echo "{\"server\":\"$1\",\"label\":\"$2\",$3}" >>"$OUT/$1.jsonl"
}

yl () {  # server label timeout-s yload-args...
  local name=$1 label=$2 limit=$3; shift 3
  local elapsed=$(( $(date +%s) - T0 )) rc line errf=$TMPROOT/yload.err outf=$TMPROOT/yload.out
  if [ "$elapsed" -ge "$BUDGET_S" ]; then
    say "$name $label: skipped, time budget of $BUDGET_S s used up"
    record "$name" "$label" "\"skipped\":\"time budget of $BUDGET_S s used up\""; return
  fi
  if [ -z "${PID[$name]:-}" ]; then
    record "$name" "$label" '"skipped":"server not running"'; return
  fi
  if [ -n "${DEAD[$name]:-}" ]; then
    record "$name" "$label" "\"skipped\":\"server died during ${DEAD[$name]}\""; return
  fi
  # Never run much past the budget: cap this run's deadline at what is left + 30 s.
  local left=$(( BUDGET_S - elapsed + 30 ))
  [ "$limit" -gt "$left" ] && limit=$left
  local args=(--url "${URL[$name]}" --protocol "${PROTO[$name]}" --server-pid "${PID[$name]}")
  [ -n "${QUERY[$name]}" ] && args+=(--query "${QUERY[$name]}")
  # In the background and waited for, so that a TERM or INT to this script
  # is handled at once (cleanup stops this run too, by its PID).
  timeout -k 5 $((limit + 15)) node "$BENCH/yload.mjs" "${args[@]}" --json --timeout "$limit" "$@" \
    >"$outf" 2>"$errf" &
  local ypid=$!
  ALL_PIDS+=("$ypid")
  wait "$ypid"
  rc=$?
  forget_pid "$ypid"
  { echo "== $name $label (rc $rc)"; cat "$errf"; } >>"$OUT/logs/yload.log"
  sed "s/^/[bench]   $name $label: /" "$errf" >&2
  line=$(grep '^{' "$outf" | tail -n1)
  if [ -n "$line" ]; then
    echo "$line" | sed "s/^{/{\"server\":\"$name\",\"label\":\"$label\",\"rc\":$rc,/" >>"$OUT/$name.jsonl"
  else
    record "$name" "$label" "\"rc\":$rc,\"error\":\"yload ended (rc $rc) without a result: $(tail -n1 "$errf" | tr -d '"\\' | cut -c1-200)\""
  fi
  if ! kill -0 "${PID[$name]}" 2>/dev/null; then
    say "$name died during $label (log: logs/)"
    DEAD[$name]=$label
    echo -e "$name\t$label\tthe server process died during this run" >>"$FAILURES"
  fi
}

# phase NAME SCENARIO-FUNCTION: starts every server fresh, runs the
# scenarios (each one against every server in turn, so that all servers see
# the same moment of a noisy machine), then stops them all.
phase () {
  local ph=$1 fn=$2 name
  if [ $(( $(date +%s) - T0 )) -ge "$BUDGET_S" ]; then
    say "phase $ph skipped: time budget of $BUDGET_S s used up"
    "$fn"   # records every run of the phase as skipped
    return
  fi
  say "phase $ph: starting $SERVERS"
  for name in $SERVERS; do
    if ! start_server "$name" "$ph"; then
      say "$name did not start (log: $OUT/logs/$name-$ph.log)"
      echo -e "$name\t$ph\tfailed to start: $(tail -n3 "$OUT/logs/$name-$ph.log" | tr '\t\n' '  ' | cut -c1-300)" >>"$FAILURES"
      stop_server "$name"
    fi
  done
  "$fn"
  for name in $SERVERS; do stop_server "$name"; done
}

each () {  # label timeout-s args...: one yload run against every server
  local name
  for name in $SERVERS; do
    say "$name: $1"
    yl "$name" "$@"
  done
}

scenarios_idle_small () {
  each "idle 1000" 120 --scenarios idle --idle 1000 --idle-per-room 10
}

scenarios_idle_big () {
  each "idle $IDLE_BIG" 300 --scenarios idle --idle "$IDLE_BIG" --idle-per-room 10
}

scenarios_main () {
  # yload speaks Hocuspocus's framing itself; check it against the real
  # @hocuspocus/provider first (both write into one document and must agree).
  if [ -n "${PID[hocuspocus]:-}" ] && [ $(( $(date +%s) - T0 )) -lt "$BUDGET_S" ]; then
    say "hocuspocus: framing crosscheck against @hocuspocus/provider"
    if ! (cd "$BENCH" && timeout -k 5 30 node anchors/hocuspocus-crosscheck.mjs "${URL[hocuspocus]}") \
        >>"$OUT/logs/hocuspocus-crosscheck.log" 2>&1; then
      echo -e "hocuspocus\tcrosscheck\tyload's Hocuspocus framing disagrees with @hocuspocus/provider (logs/hocuspocus-crosscheck.log)" >>"$FAILURES"
    fi
  fi
  # 64 clients joining one new room at once (64 handshakes in flight), then
  # connection set-up rate over 500 connections in 100 rooms.
  each "connect r1c64" 60 --scenarios connect --rooms 1 --clients-per-room 64
  each "connect r100c5" 60 --scenarios connect --rooms 100 --clients-per-room 5
  each "bigdoc" 200 --scenarios bigdoc --big-mb 1,10 --big-joins 3
  local rep shape rooms cpr clients per rate
  for rep in $(seq 1 "$REPS"); do
    for shape in "1 2" "1 10" "1 50" "100 2"; do
      set -- $shape; rooms=$1; cpr=$2
      clients=$((rooms * cpr)); per=$((TOTAL_UPDATES / clients))
      rate=$(node -p "+(${PACED_RATE}/${clients}).toFixed(3)")
      each "paced r${rooms}c${cpr}" 90 --scenarios connect,fanout --rooms "$rooms" --clients-per-room "$cpr" \
        --updates "$per" --update-size 20 --rate "$rate" --duration 30 --seed "$rep"
      each "flat r${rooms}c${cpr}" 90 --scenarios connect,fanout --rooms "$rooms" --clients-per-room "$cpr" \
        --updates "$per" --update-size 20 --rate 0 --duration 30 --seed "$rep"
    done
  done
}

scenarios_smoke () {
  each "connect r1c16" 30 --scenarios connect --rooms 1 --clients-per-room 16
  each "paced r1c2" 30 --scenarios connect,fanout --rooms 1 --clients-per-room 2 \
    --updates 15 --update-size 20 --rate 15 --duration 5 --drain-timeout 10
  each "flat r2c3" 30 --scenarios connect,fanout --rooms 2 --clients-per-room 3 \
    --updates 20 --update-size 20 --rate 0 --duration 5 --drain-timeout 10
  each "bigdoc" 30 --scenarios bigdoc --big-mb 0.25 --big-joins 1
  each "idle 100" 30 --scenarios idle --idle 100 --idle-per-room 10 --idle-settle-ms 300
}

# ------------------------------------------------------------ main

say "output: $OUT"
say "npm packages (pinned by bench/package-lock.json)"
lock_sum=$(sha256sum "$BENCH/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$BENCH/node_modules/.bench-lock-sha256" 2>/dev/null)" != "$lock_sum" ]; then
  (cd "$BENCH" && npm ci --no-audit --no-fund --loglevel=error) >"$OUT/logs/npm-ci.log" 2>&1 \
    || { cat "$OUT/logs/npm-ci.log" >&2; die "npm ci failed in $BENCH"; }
  echo "$lock_sum" >"$BENCH/node_modules/.bench-lock-sha256"
fi

{
  echo "{"
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"mode\": \"$([ "$SMOKE" = 1 ] && echo smoke || echo full)\","
  echo "  \"command\": \"$([ "$SMOKE" = 1 ] && echo 'bash bench/run.sh --smoke' || echo 'bash bench/run.sh')\","
  echo "  \"servers\": \"$SERVERS\","
  echo "  \"reps\": $REPS,"
  echo "  \"totalUpdates\": $TOTAL_UPDATES,"
  echo "  \"pacedRate\": $PACED_RATE,"
  echo "  \"cpus\": $(nproc),"
  echo "  \"memTotalKiB\": $(awk '/MemTotal/ {print $2}' /proc/meminfo),"
  echo "  \"cpuModel\": \"$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo | tr -d '"\\')\","
  echo "  \"kernel\": \"$(uname -r)\","
  echo "  \"loadAtStart\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo "  \"fdLimit\": \"$FD_LIMIT\","
  echo "  \"node\": \"$(node --version)\","
  echo "  \"python\": \"$("$KRAKEN_PYTHON" --version 2>&1 | tr -d '"\\')\","
  echo "  \"kraken\": \"$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)\""
  echo "}"
} >"$OUT/meta.json"

if [ "$SMOKE" = 1 ]; then
  phase smoke scenarios_smoke
else
  phase idle-1000 scenarios_idle_small
  phase "idle-$IDLE_BIG" scenarios_idle_big
  phase main scenarios_main
fi
cleanup

BENCH_ELAPSED_S=$(( $(date +%s) - T0 )) node "$BENCH/summarize.mjs" "$OUT"
status=$?
say "done in $(( $(date +%s) - T0 )) s: $OUT/results.md"
exit $status
