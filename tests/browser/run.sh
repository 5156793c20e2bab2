#!/usr/bin/env bash
# The web UI of `retro serve` in headless Chromium: bash tests/browser/run.sh [RETRO_BINARY]
#
# Installs what it needs when missing (Debian's chromium with apt-get, playwright-core with npm
# into tests/browser/node_modules), builds nothing: it takes the `retro` binary (default
# target/debug/retro), makes a temporary depot with a few commands, serves it on a free port and
# runs ui.test.mjs against it. Exits non-zero when a check fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# A relative path is taken from the working directory; the default from the repository root.
retro="${1:-$here/../../target/debug/retro}"
case "$retro" in /*) ;; *) retro="$PWD/$retro" ;; esac
if [ ! -x "$retro" ]; then
    echo "run.sh: no retro binary at $retro (build it first: cargo build -p retro-cli)" >&2
    exit 1
fi

if [ ! -x /usr/bin/chromium ]; then
    echo "run.sh: installing chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq chromium >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq chromium >/dev/null
    fi
fi
if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
    echo "run.sh: installing playwright-core" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

# A clean environment for retro, a temporary depot with some history.
unset RETRO_DEPOT RETRO_SESSION RETRO_MANIFEST RETRO_TOKEN
export NO_COLOR=1
tmp="$(mktemp -d -t retro-browser-XXXXXX)"
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

depot="$tmp/depot"
"$retro" --depot "$depot" init >/dev/null
for command in \
    '{"path":"accounts/alice","name":"open","params":{"owner":"Alice"}}' \
    '{"path":"accounts/bob","name":"open","params":{"owner":"Bob","currency":"USD"}}' \
    '{"path":"accounts/alice","name":"deposit","params":{"amount":5000}}' \
    '{"id":"ui-transfer-1","correlation_id":"ui-order-7","path":"accounts/alice","name":"transfer","params":{"to":"accounts/bob","amount":1200}}' \
    '{"path":"accounts/bob","name":"withdraw","params":{"amount":200}}'; do
    "$retro" --depot "$depot" apply --session s-ui "$command" >/dev/null
done

# Port 0: the kernel picks a free port; the address comes from the server's first stderr line.
"$retro" --depot "$depot" serve --listen 127.0.0.1:0 2>"$tmp/serve.log" &
server=$!
url=""
for _ in $(seq 1 200); do
    url="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$tmp/serve.log" || true)"
    [ -n "$url" ] && break
    if ! kill -0 "$server" 2>/dev/null; then
        cat "$tmp/serve.log" >&2
        echo "run.sh: retro serve exited" >&2
        exit 1
    fi
    sleep 0.05
done
if [ -z "$url" ]; then
    cat "$tmp/serve.log" >&2
    echo "run.sh: retro serve printed no address" >&2
    exit 1
fi

RETRO_URL="$url" RETRO_BIN="$retro" RETRO_TEST_DEPOT="$depot" node "$here/ui.test.mjs"
