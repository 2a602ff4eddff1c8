#!/usr/bin/env bash
# Runs the load-generator scenarios against a fresh release server on this host and
# prints a Markdown results table (median of RUNS runs per row).
#
#   scripts/bench.sh                 echo 100, broadcast 10k, idle 30k; 3 runs each
#   RUNS=5 DURATION=10s scripts/bench.sh
#   SHARDS=2 THREADS=2 scripts/bench.sh
#
# Every run is bounded (--duration plus connect time); the server is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
SHARDS=${SHARDS:-2}
THREADS=${THREADS:-2}
BIN=target/release/ringpush

cargo build --release --quiet
srv_err=$(mktemp -t ringpush-bench.XXXXXX)
trap 'rm -f "$srv_err"; [ -n "${SRV:-}" ] && kill "$SRV" 2>/dev/null; true' EXIT

start_server() {
    "$BIN" serve --listen 127.0.0.1:0 --shards "$SHARDS" 2>"$srv_err" &
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
        "$BIN" load --url "ws://127.0.0.1:$PORT$path" --scenario "$scenario" \
            --connections "$conns" --duration "$DURATION" --threads "$THREADS" --json "$@" \
            >"$out" 2>/dev/null
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
run "echo, 100 connections, 32 B" /echo echo 100 \
    "f\"{r['received_per_sec']:.0f} msg/s\"" \
    "f\"{r['latency_us']['p50']} / {r['latency_us']['p99']} us\""
run "broadcast to 10,000 subscribers, 32 B" /ws/bench broadcast 10000 \
    "f\"{r['received_per_sec']:.0f} deliveries/s\"" \
    "f\"{r['latency_us']['p50']} / {r['latency_us']['p99']} us\"" --rate 50000
run "idle 30,000: server RSS per connection" /ws/idle idle 30000 \
    "f\"{r['server_rss_per_conn']:.0f} B\"" \
    "f\"{r['handshake_us']['p50']} / {r['handshake_us']['p99']} us (handshake)\"" --rate 50000
