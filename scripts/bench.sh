#!/usr/bin/env bash
# Runs the load-generator scenarios against a fresh release server on this host and
# prints a Markdown results table (median of RUNS runs per row).
#
#   scripts/bench.sh                 echo 100, broadcast 10k, idle 30k; 3 runs each
#   RUNS=5 DURATION=10s scripts/bench.sh
#   SHARDS=2 THREADS=2 scripts/bench.sh
#   BIN=/tmp/old/target/release/ringpush scripts/bench.sh     another build (not rebuilt)
#   ROWS=handshake AUTH=es256 scripts/bench.sh                 10,000 handshakes with tokens
#   TLS=1 ROWS=idle IDLE_CONNS=100000 scripts/bench.sh          idle wss:// memory at 100,000
#
# ROWS picks rows (default "echo broadcast idle"; also "handshake": 10,000 clients
# connect at once to /ws/hs and hold, the connect rate and handshake latency). AUTH
# (none, hs256, es256) starts the server with --jwt-secret or --jwt-public-key and gives
# every client a token (`?token=`, minted by tests/interop/jwt_tool.py: PyJWT).
#
# TLS=1 serves TLS (--tls-cert/--tls-key: a P-256 certificate made here by openssl) and
# loads it over wss:// with --tls-insecure (a full handshake per connection; TLS_RESUME=1
# adds --tls-resume). IDLE_CONNS sizes the idle row (default 30,000).
#
# Every run is bounded (--duration plus connect time); the server is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
SHARDS=${SHARDS:-2}
THREADS=${THREADS:-2}
ROWS=${ROWS:-"echo broadcast idle"}
AUTH=${AUTH:-none}
TLS=${TLS:-0}
IDLE_CONNS=${IDLE_CONNS:-30000}

if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/ringpush
fi
srv_err=$(mktemp -t ringpush-bench.XXXXXX)
keydir=$(mktemp -d -t ringpush-bench-keys.XXXXXX)
trap 'rm -rf "$srv_err" "$keydir"; [ -n "${SRV:-}" ] && kill "$SRV" 2>/dev/null; true' EXIT

# Authorization: server flags and the query every client adds to its URL.
auth_flags=()
query=""
if [ "$AUTH" != none ]; then
    jwt() { python3 tests/interop/jwt_tool.py "$@"; }
    claims='{"exp": {"in": 3600}, "sub": "bench", "subscribe": ["*"], "publish": ["*"]}'
    case $AUTH in
        hs256)
            secret=bench-secret-0123456789abcdef0123456789
            export RINGPUSH_JWT_SECRET=$secret
            query="?token=$(jwt mint HS256 "$secret" "$claims")"
            ;;
        es256)
            jwt keys "$keydir"
            auth_flags=(--jwt-public-key "$keydir/ec_public.pem")
            query="?token=$(jwt mint ES256 "$keydir/ec_private.pem" "$claims")"
            ;;
        *) echo "bench.sh: AUTH must be none, hs256 or es256, got $AUTH" >&2; exit 2 ;;
    esac
fi

# TLS: server flags, the URL scheme and the load generator's flags.
tls_flags=()
load_tls=()
scheme=ws
if [ "$TLS" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$keydir/tls_key.pem" -out "$keydir/tls_cert.pem" 2>/dev/null
    tls_flags=(--tls-cert "$keydir/tls_cert.pem" --tls-key "$keydir/tls_key.pem")
    load_tls=(--tls-insecure)
    [ "${TLS_RESUME:-0}" = 1 ] && load_tls+=(--tls-resume)
    scheme=wss
fi

start_server() {
    "$BIN" serve --listen 127.0.0.1:0 --shards "$SHARDS" "${auth_flags[@]}" "${tls_flags[@]}" 2>"$srv_err" &
    SRV=$!
    for _ in $(seq 1 50); do
        grep -q "listening on" "$srv_err" && break
        sleep 0.1
    done
    PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$srv_err" | cut -d: -f2)
    [ -n "$PORT" ] || { echo "bench.sh: server did not start: $(cat "$srv_err")" >&2; exit 1; }
}

stop_server() {
    kill -TERM "$SRV"
    wait "$SRV" || true
    SRV=
}

# field FILE EXPR: a value from a --json report (a Python expression over `r`).
field() {
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"
}

median() {
    sort -g | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'
}

# run NAME PATH SCENARIO CONNECTIONS METRIC_EXPR LATENCY_EXPR [extra load flags]
run() {
    local name=$1 path=$2 scenario=$3 conns=$4 metric=$5 latency=$6
    shift 6
    local metrics=() latencies=()
    for i in $(seq 1 "$RUNS"); do
        start_server
        local out
        out=$(mktemp -t ringpush-bench-run.XXXXXX)
        "$BIN" load --url "$scheme://127.0.0.1:$PORT$path$query" --scenario "$scenario" \
            --connections "$conns" --duration "$DURATION" --threads "$THREADS" --json "$@" \
            "${load_tls[@]}" >"$out" 2>/dev/null
        stop_server
        metrics+=("$(field "$out" "$metric")")
        latencies+=("$(field "$out" "$latency")")
        echo "  $name run $i: ${metrics[-1]} | ${latencies[-1]}" >&2
        rm -f "$out"
    done
    printf '| %s | %s | %s |\n' "$name" \
        "$(printf '%s\n' "${metrics[@]}" | median)" \
        "$(printf '%s\n' "${latencies[@]}" | median)"
}

echo "| scenario | result (median of $RUNS) | latency p50 / p99 (run with the median p50) |"
echo "|---|---:|---:|"
for row in $ROWS; do
    case $row in
        echo)
            run "echo, 100 connections, 32 B" /echo echo 100 \
                "f\"{r['received_per_sec']:.0f} msg/s\"" \
                "f\"{r['latency_us']['p50']} / {r['latency_us']['p99']} us\""
            ;;
        broadcast)
            run "broadcast to 10,000 subscribers, 32 B" /ws/bench broadcast 10000 \
                "f\"{r['received_per_sec']:.0f} deliveries/s\"" \
                "f\"{r['latency_us']['p50']} / {r['latency_us']['p99']} us\"" --rate 50000
            ;;
        idle)
            run "idle $IDLE_CONNS: server RSS per connection" /ws/idle idle "$IDLE_CONNS" \
                "f\"{r['server_rss_per_conn']:.0f} B\"" \
                "f\"{r['handshake_us']['p50']} / {r['handshake_us']['p99']} us (handshake)\"" --rate 50000
            ;;
        handshake)
            DURATION=1s run "10,000 handshakes at once (auth: $AUTH)" /ws/hs idle 10000 \
                "f\"{r['connected'] / r['connect_secs']:.0f} handshakes/s\"" \
                "f\"{r['handshake_us']['p50']} / {r['handshake_us']['p99']} us\"" \
                --rate 1000000
            ;;
        *) echo "bench.sh: unknown row $row (echo, broadcast, idle, handshake)" >&2; exit 2 ;;
    esac
done
