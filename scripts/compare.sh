#!/usr/bin/env bash
# ringpush beside the servers a user would pick instead, measured by the same load
# generator in the same run on the same machine.
#
#   scripts/compare.sh                 every peer, every scenario, median of 3 runs
#   RUNS=5 DURATION=10s scripts/compare.sh
#   PEERS="ringpush tokio-tungstenite" SCENARIOS="echo100 bcast10k" scripts/compare.sh
#   UWS_SRC=/path/to/uWebSockets scripts/compare.sh   with the uWebSockets C++ peer (uws-cpp)
#   PEERS="ringpush uws-js" SCENARIOS="bcast10k-json bcast10k-deflate" scripts/compare.sh
#   TLS=1 PEERS=ringpush SCENARIOS="echo100 bcast10k connrate" scripts/compare.sh
#
# TLS=1 adds ringpush over TLS beside whichever peers run: `ringpush-tls` (the server
# with --tls-cert/--tls-key, a P-256 certificate made here by openssl; the load
# generator on wss:// and https:// with --tls-insecure, a full handshake per
# connection) and `ringpush-tls-resume` (the same with --tls-resume: connections resume
# sessions from the tickets earlier ones received; connrate only). The peers stay plain.
#
# bcast10k-json and bcast10k-deflate broadcast the same 1 KB JSON message to 10,000
# subscribers, without and with permessage-deflate (the load generator's --compression:
# every subscriber offers it as browsers do). Only servers that compress a published
# message once for all subscribers take part in bcast10k-deflate: ringpush (its default
# --compression shared) and uws-js (uWS.SHARED_COMPRESSOR).
#
# Pinning: every server runs on CPU $SERVER_CPU with one thread (ringpush --shards 1,
# the peers --threads 1) and the load generator on CPU $LOAD_CPU with one worker, so
# each server gets the same single core and never competes with its client.
#
# Output: target/compare/results.md (tables with ratios to ringpush),
# target/compare/results.json (every run), target/compare/compare.png (the plot).
# Peers are built or installed from the package registries by the scripts beside them
# (benches/peers/*); a peer that cannot be built here is skipped with a note. uws-cpp is
# built from a uWebSockets source checkout named by UWS_SRC (`git clone --recursive
# https://github.com/uNetworking/uWebSockets`); without one it is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PEERS=${PEERS:-"kernel ringpush tokio-tungstenite fastwebsockets node-ws go-gorilla uws-js uws-cpp"}
SCENARIOS=${SCENARIOS:-"echo100 echo10k bcast10k idle20k connrate raw sse-vs-poll"}
OUT=target/compare
BIN=target/release/ringpush
PEER_BIN=benches/peers/rust/target/release
mkdir -p "$OUT"
runs_file="$OUT/runs.jsonl"
: >"$runs_file"
# Builds that depend on the user's checkout, one "peer: what" line each, for results.md.
builds_file="$OUT/builds.txt"
: >"$builds_file"

if ! python3 -c 'import matplotlib' 2>/dev/null; then
    echo "== installing matplotlib from PyPI (for the plot)" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore matplotlib ||
        echo "compare.sh: no matplotlib: the tables are written, the plot is not" >&2
fi
echo "== building ringpush and the peers" >&2
cargo build --release --quiet
if [ "${TLS:-0}" = 1 ]; then
    PEERS="$PEERS ringpush-tls ringpush-tls-resume"
    tls_dir=$(mktemp -d -t ringpush-compare-tls.XXXXXX)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" 2>/dev/null
fi
available=()
for peer in $PEERS; do
    # `uws` was the uWebSockets.js peer's name before the C++ build joined as uws-cpp.
    if [ "$peer" = uws ]; then peer=uws-js; fi
    case $peer in
        ringpush | ringpush-tls | ringpush-tls-resume) available+=("$peer") ;;
        # The kernel baseline: ringpush's own io_uring driver with no protocol work past
        # the handshake (benches/peers/rust/raw-echo, `raw-echo ws`), driven by the same
        # load generator: every row's "vs kernel" column is a fraction of what it allows.
        tokio-tungstenite | fastwebsockets | kernel)
            if cargo build --release --quiet --manifest-path benches/peers/rust/Cargo.toml; then
                available+=("$peer")
            else
                echo "compare.sh: cannot build the Rust peers; skipping $peer" >&2
            fi
            ;;
        node-ws)
            if benches/peers/node/install.sh >/dev/null; then available+=("$peer"); else
                echo "compare.sh: cannot install the Node peer; skipping it" >&2
            fi
            ;;
        go-gorilla)
            if benches/peers/go/build.sh >/dev/null; then available+=("$peer"); else
                echo "compare.sh: cannot build the Go peer; skipping it" >&2
            fi
            ;;
        uws-js)
            # uWebSockets.js through npm's third-party `uwebsockets` package (the
            # authors publish only on GitHub): see benches/peers/README.md.
            if benches/peers/uws/install.sh >/dev/null; then available+=("$peer"); else
                echo "compare.sh: cannot install uWebSockets.js; skipping it" >&2
            fi
            ;;
        uws-cpp)
            # uWebSockets + uSockets (C++) from the checkout at $UWS_SRC; build.sh says
            # in one line why when there is none.
            if benches/peers/uws-cpp/build.sh >/dev/null; then
                available+=("$peer")
                echo "uws-cpp: $(cat benches/peers/uws-cpp/build/BUILD_INFO) from UWS_SRC=$UWS_SRC" >>"$builds_file"
            else
                echo "compare.sh: cannot build the uWebSockets C++ peer; skipping it" >&2
            fi
            ;;
        *) echo "compare.sh: unknown peer $peer" >&2 ;;
    esac
done

# start_server NAME: starts it pinned on a free port; sets SRV (pid) and PORT.
start_server() {
    local name=$1 port
    # A free port below the ephemeral range (32768+), where the load generator's
    # TIME_WAIT sockets would make a peer without SO_REUSEADDR fail to bind.
    port=$(python3 -c '
import random, socket
for _ in range(200):
    p = random.randint(20000, 30000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()
')
    local cmd
    case $name in
        ringpush) cmd=("$BIN" serve --listen "127.0.0.1:$port" --shards 1) ;;
        ringpush-tls | ringpush-tls-resume) cmd=("$BIN" serve --listen "127.0.0.1:$port" --shards 1 \
            --tls-cert "$tls_dir/cert.pem" --tls-key "$tls_dir/key.pem") ;;
        tokio-tungstenite) cmd=("$PEER_BIN/peer-tokio-tungstenite" --listen "127.0.0.1:$port" --threads 1) ;;
        fastwebsockets) cmd=("$PEER_BIN/peer-fastwebsockets" --listen "127.0.0.1:$port" --threads 1) ;;
        raw-echo) cmd=("$PEER_BIN/raw-echo" --listen "127.0.0.1:$port" --threads 1) ;;
        # Sized for the case's connections: one fixed-file table up to 12,000, as
        # ringpush's one shard has (more tables cost the baseline extra ring enters).
        kernel) cmd=("$PEER_BIN/raw-echo" ws --listen "127.0.0.1:$port" --threads 1 --max-conns "${KERNEL_CONNS:-12000}") ;;
        node-ws) cmd=(benches/peers/node/run.sh --listen "127.0.0.1:$port" --threads 1) ;;
        go-gorilla) cmd=(benches/peers/go/gorilla-peer --listen "127.0.0.1:$port" --threads 1) ;;
        uws-js) cmd=(benches/peers/uws/run.sh --listen "127.0.0.1:$port" --threads 1 ${UWS_COMPRESSION:+--compression "$UWS_COMPRESSION"}) ;;
        uws-cpp) cmd=(benches/peers/uws-cpp/build/uws-cpp-peer --listen "127.0.0.1:$port" --threads 1) ;;
    esac
    taskset -c "$SERVER_CPU" "${cmd[@]}" >/dev/null 2>&1 &
    SRV=$!
    PORT=$port
    for _ in $(seq 1 100); do
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.2)' "$port" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "compare.sh: $name did not start" >&2
    return 1
}

stop_server() {
    kill -TERM "$SRV" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SRV" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SRV" 2>/dev/null || true
    wait "$SRV" 2>/dev/null || true
    SRV=
}
trap '[ -n "${SRV:-}" ] && kill -KILL "$SRV" 2>/dev/null; [ -n "${tls_dir:-}" ] && rm -rf "$tls_dir"; true' EXIT

# measure SERVER SCENARIO RUN LOAD-ARGS...: one run, one JSON line appended.
measure() {
    local server=$1 scenario=$2 run=$3
    shift 3
    # Resumption changes the handshake only: the other cases would repeat ringpush-tls.
    if [ "$server" = ringpush-tls-resume ] && [ "$scenario" != connrate ]; then return 0; fi
    start_server "$server" || return 0
    local json url tls=()
    url=$(sed "s/PORT/$PORT/" <<<"$URL")
    case $server in
        ringpush-tls) url=$(sed 's,^ws://,wss://,; s,^http://,https://,' <<<"$url"); tls=(--tls-insecure) ;;
        ringpush-tls-resume) url=$(sed 's,^ws://,wss://,; s,^http://,https://,' <<<"$url"); tls=(--tls-insecure --tls-resume) ;;
    esac
    if json=$(taskset -c "$LOAD_CPU" "$BIN" load --threads 1 --json "$@" "${tls[@]}" \
        --url "$url" 2>/dev/null); then
        python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r.update(server=sys.argv[1], case=sys.argv[2], run=int(sys.argv[3])); print(json.dumps(r))' \
            "$server" "$scenario" "$run" <<<"$json" >>"$runs_file"
        echo "  $server $scenario run $run: done" >&2
    else
        echo "  $server $scenario run $run: load failed" >&2
    fi
    stop_server
}

for scenario in $SCENARIOS; do
    echo "== $scenario" >&2
    for run in $(seq 1 "$RUNS"); do
        case $scenario in
            echo100 | echo10k)
                n=100; [ "$scenario" = echo10k ] && n=10000
                URL="ws://127.0.0.1:PORT/echo"
                for s in "${available[@]}"; do
                    measure "$s" "$scenario" "$run" --scenario echo --connections "$n" \
                        --duration "$DURATION" --rate 20000
                done
                ;;
            bcast10k)
                URL="ws://127.0.0.1:PORT/ws/bench"
                for s in "${available[@]}"; do
                    measure "$s" "$scenario" "$run" --scenario broadcast --connections 10000 \
                        --duration "$DURATION" --rate 20000
                done
                ;;
            bcast10k-json | bcast10k-deflate)
                URL="ws://127.0.0.1:PORT/ws/bench"
                if [ "$scenario" = bcast10k-deflate ]; then
                    deflate=(--compression)
                    UWS_COMPRESSION=shared
                else
                    deflate=()
                    UWS_COMPRESSION=
                fi
                for s in "${available[@]}"; do
                    if [ "$scenario" = bcast10k-deflate ] && [ "$s" != ringpush ] && [ "$s" != uws-js ]; then
                        continue
                    fi
                    measure "$s" "$scenario" "$run" --scenario broadcast --connections 10000 \
                        --duration "$DURATION" --rate 20000 --message-bytes 1024 --json-payload \
                        "${deflate[@]}"
                done
                UWS_COMPRESSION=
                ;;
            idle20k)
                URL="ws://127.0.0.1:PORT/ws/idle"
                for s in "${available[@]}"; do
                    KERNEL_CONNS=20001 measure "$s" "$scenario" "$run" --scenario idle \
                        --connections 20000 --duration 3s --rate 20000
                done
                ;;
            connrate)
                # Handshake rate: 10,000 connections as fast as the server takes them (below
                # RLIMIT_NOFILE, 20,000 here: a peer holding one fd per connection cannot
                # take 20,000, and its stragglers would be timed, not its handshakes).
                URL="ws://127.0.0.1:PORT/ws/rate"
                for s in "${available[@]}"; do
                    measure "$s" "$scenario" "$run" --scenario idle --connections 10000 \
                        --duration 100ms --rate 1000000
                done
                ;;
            raw)
                # The kernel budget: raw io_uring echo, no protocol work, its own client.
                if [ -x "$PEER_BIN/raw-echo" ]; then
                    for n in 100 10000; do
                        start_server raw-echo || continue
                        if json=$(taskset -c "$LOAD_CPU" "$PEER_BIN/raw-echo" client \
                            --connect "127.0.0.1:$PORT" --connections "$n" --message-bytes 32 \
                            --duration "$DURATION" --threads 1 2>/dev/null); then
                            python3 -c 'import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); r.update(server="raw-io_uring", case=sys.argv[1], run=int(sys.argv[2])); print(json.dumps(r))' \
                                "echo$([ "$n" = 100 ] && echo 100 || echo 10k)" "$run" <<<"$json" >>"$runs_file"
                        fi
                        stop_server
                    done
                fi
                ;;
            sse-vs-poll)
                # ringpush's push against its own polling endpoints: 1,000 subscribers,
                # 1 and 10 events/s, the same events; wire bytes and server CPU per event.
                for rate in 1 10; do
                    for mode in sse longpoll poll; do
                        case $mode in
                            sse) URL="http://127.0.0.1:PORT/sse/feed" ;;
                            longpoll) URL="http://127.0.0.1:PORT/poll/feed?wait=30s" ;;
                            poll) URL="http://127.0.0.1:PORT/poll/feed" ;;
                        esac
                        measure ringpush "push-$mode-$rate" "$run" --scenario broadcast \
                            --connections 1000 --duration "$DURATION" --publish-rate "$rate" \
                            --poll-interval 1s
                    done
                done
                ;;
        esac
    done
done

python3 scripts/compare_report.py "$runs_file" "$OUT"
