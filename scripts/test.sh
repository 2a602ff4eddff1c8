#!/usr/bin/env bash
# Installs everything the tests need (idempotently) and runs every test.
#
#   scripts/test.sh            everything: fmt, clippy, unit + integration tests (peer
#                              clients, Chromium, redis-server, nginx and HAProxy
#                              installed first),
#                              Autobahn|TestSuite, fuzz smoke
#   FUZZ_SECONDS=0 scripts/test.sh   skip the fuzz smoke runs
#   AUTOBAHN=0 scripts/test.sh       skip the Autobahn|TestSuite run (scripts/autobahn.sh)
#
# Ends with one summary line: "summary: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-10}
AUTOBAHN=${AUTOBAHN:-1}
log=$(mktemp -t ringpush-test.XXXXXX)
trap 'rm -f "$log"' EXIT
failed_stages=()

stage() {
    local name=$1
    shift
    echo "== $name: $*"
    if "$@" 2>&1 | tee -a "$log"; then
        return 0
    fi
    echo "== $name FAILED"
    failed_stages+=("$name")
    return 1
}

# --- tools -------------------------------------------------------------------------
ensure_cargo_fuzz() {
    command -v cargo-fuzz >/dev/null 2>&1 && return 0
    echo "== installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz
}

# Peer clients for tests/interop.rs, tests/sse_interop.rs and tests/auth.rs, from the
# registries: Python `websockets`, `httpx-sse` and `pyjwt[crypto]`; Node `ws`, `eventsource` and `playwright-core` (the last
# drives Chromium for tests/browser.rs), all pinned by tests/interop/package-lock.json.
ensure_peer_clients() {
    if ! python3 -c 'import websockets.sync.client' >/dev/null 2>&1; then
        echo "== installing Python websockets from PyPI"
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'websockets>=13' || return 1
    fi
    if ! python3 -c 'import httpx, httpx_sse' >/dev/null 2>&1; then
        echo "== installing Python httpx-sse from PyPI"
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'httpx>=0.27' 'httpx-sse>=0.4' || return 1
    fi
    # tests/auth.rs mints its tokens with PyJWT (and makes keys with `cryptography`).
    if ! python3 -c 'import jwt, cryptography' >/dev/null 2>&1; then
        echo "== installing Python PyJWT and cryptography from PyPI"
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'pyjwt[crypto]>=2.8' || return 1
    fi
    local pkg
    for pkg in ws eventsource playwright-core; do
        if [ ! -d "tests/interop/node_modules/$pkg" ]; then
            echo "== installing Node ws, eventsource and playwright-core from npm"
            (cd tests/interop && npm ci --silent --no-audit --no-fund) || return 1
            break
        fi
    done
}

# Debian's Chromium for tests/browser.rs (playwright-core downloads no browser of its own).
ensure_chromium() {
    [ -x /usr/bin/chromium ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "== installing chromium from Debian"
    # The package lists may be missing or stale on a fresh machine.
    if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        $sudo apt-get update -qq || return 1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null || return 1
    [ -x /usr/bin/chromium ]
}

# Installs Debian packages without letting their own services start: they would take
# the ports the tests do not use anyway (redis 6379, nginx 80) and outlive the run. As
# container images do, a policy-rc.d that exits 101 keeps them down, unless the machine
# already has a policy.
debian_install() {
    local sudo="" policy=/usr/sbin/policy-rc.d added_policy=0 rc=0
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "== installing $* from Debian"
    # The package lists may be missing or stale on a fresh machine.
    if ! apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        $sudo apt-get update -qq || return 1
    fi
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && added_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=1
    [ "$added_policy" = 0 ] || $sudo rm -f "$policy"
    return "$rc"
}

# Debian's redis-server (7.0; it brings redis-cli with redis-tools) for tests/cluster.rs,
# which starts its own servers on free loopback ports and never uses one it did not start.
ensure_redis() {
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
    debian_install redis-server || return 1
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1
}

# Debian's nginx (1.22, with the stream module) and HAProxy (2.6) for tests/proxies.rs,
# which starts its own on free loopback ports from tuning/nginx.conf and
# tuning/haproxy.cfg. /usr/sbin is not on every user's PATH: look there too.
have_sbin() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
ensure_proxies() {
    have_sbin nginx && have_sbin haproxy && [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] && return 0
    debian_install nginx libnginx-mod-stream haproxy || return 1
    have_sbin nginx && have_sbin haproxy
}

# --- stages ------------------------------------------------------------------------
stage peer-clients ensure_peer_clients
stage chromium ensure_chromium
stage redis ensure_redis
stage proxies ensure_proxies
stage fmt cargo fmt --all -- --check
stage clippy cargo clippy --all-targets --locked -- -D warnings
# tests/proxies.rs fails instead of skipping when nginx or haproxy is missing: the
# proxies stage above installs them.
export RINGPUSH_REQUIRE_PROXIES=1
# --all-targets also runs each criterion bench once in test mode, so benches stay working.
stage test cargo test --all-targets --locked --no-fail-fast
stage doctest cargo test --doc --locked
# Every Autobahn|TestSuite case against /echo; prints a skip line where no Python 2.7 runs.
[ "$AUTOBAHN" = 0 ] || stage autobahn scripts/autobahn.sh

fuzz_passed=0
fuzz_failed=0
if [ "$FUZZ_SECONDS" -gt 0 ]; then
    if stage fuzz-install ensure_cargo_fuzz; then
        for target in $(scripts/fuzz.sh --list); do
            if stage "fuzz:$target" scripts/fuzz.sh "$target" "$FUZZ_SECONDS"; then
                fuzz_passed=$((fuzz_passed + 1))
            else
                fuzz_failed=$((fuzz_failed + 1))
            fi
        done
    fi
fi

# --- summary -----------------------------------------------------------------------
passed=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -oE '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
passed=$((passed + fuzz_passed))
failed=$((failed + fuzz_failed))
if [ ${#failed_stages[@]} -gt 0 ]; then
    # The failing tests' names and first lines again, so that the tail of the run shows them.
    grep -E '^test .* FAILED$' "$log" | head -20
    grep -E -A3 'panicked at' "$log" | head -40
    echo "failed stages: ${failed_stages[*]}"
    [ "$failed" -gt 0 ] || failed=${#failed_stages[@]}
fi
echo "summary: $passed passed, $failed failed"
[ ${#failed_stages[@]} -eq 0 ]
