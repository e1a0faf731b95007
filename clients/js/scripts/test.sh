#!/usr/bin/env bash
# Install, build and test @kraken/client: unit tests against a real Kraken,
# then browser tests in Chromium inside a network namespace that has only the
# loopback interface (so every ICE candidate is 127.0.0.1 and nothing leaves
# the machine). Each test run also gets a PID namespace of its own, so that
# no server or browser outlives it, whatever happens to the test runner.
#
# Needs Node.js 20+, npm, and a Python with Kraken installed: $KRAKEN_PYTHON,
# else python3. As root it installs Debian's chromium (and iproute2) when
# missing. The namespaces need root (unshare) or unprivileged user namespaces
# (unshare -r).
set -euo pipefail

cd "$(dirname "$0")/.."
export KRAKEN_PYTHON="${KRAKEN_PYTHON:-python3}"

if ! "$KRAKEN_PYTHON" -c 'import kraken' 2>/dev/null; then
    echo "test.sh: $KRAKEN_PYTHON cannot import kraken; set KRAKEN_PYTHON to a Python that has it" >&2
    exit 1
fi

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v ip >/dev/null || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: missing ${missing[*]}; install Debian's packages (as root: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "test.sh: installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
npm run --silent typecheck
node scripts/build-demo.mjs --check

if [ "$(id -u)" -eq 0 ]; then
    contained=(unshare --pid --fork --kill-child --mount-proc)
else
    contained=(unshare --user --map-root-user --pid --fork --kill-child --mount-proc)
fi

results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT
reporters=(--test-reporter=spec --test-reporter-destination=stdout --test-reporter=tap)
status=0

echo "== unit tests (Node, real Kraken on 127.0.0.1)"
"${contained[@]}" -- node --test --test-timeout=60000 \
    "${reporters[@]}" --test-reporter-destination="$results/unit.tap" test/unit/ || status=1

echo "== browser tests (Chromium, in a network namespace with only loopback)"
"${contained[@]}" --net -- bash -c '
    set -euo pipefail
    ip link set lo up
    node --test --test-concurrency=1 --test-timeout=120000 \
        --test-reporter=spec --test-reporter-destination=stdout \
        --test-reporter=tap --test-reporter-destination="$1" test/browser/
' bash "$results/browser.tap" || status=1

# One closing line for both runs.
count() {
    cat "$results"/*.tap 2>/dev/null | awk -v key="# $1 " 'index($0, key) == 1 { n += $3 } END { print n + 0 }'
}
passed="$(count pass)"
failed="$(count fail)"
if [ "$passed" -eq 0 ] || [ "$failed" -ne 0 ]; then
    status=1
fi
echo "clients/js: $passed passed, $failed failed"
exit "$status"
