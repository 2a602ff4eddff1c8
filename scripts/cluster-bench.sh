#!/usr/bin/env bash
# Cluster mode on this host: Redis and ringpush nodes on loopback, driven by
# `ringpush load` spreading its connections over the nodes; prints a Markdown table
# (median of RUNS runs per row).
#
#   scripts/cluster-bench.sh                  every row, 3 runs each
#   RUNS=1 DURATION=5s scripts/cluster-bench.sh
#   ROWS="broadcast latency" scripts/cluster-bench.sh
#
# Rows (ROWS, default "broadcast latency redis"):
#   broadcast  one publisher (as fast as 8 in flight allow), 10,000 subscribers:
#              one node without Redis (--shards 2), one node over Redis (--shards 2),
#              three nodes over Redis (--shards 1 each; subscribers spread over them,
#              the publisher on the first): deliveries/s and publish-to-delivery latency
#   latency    the same three set-ups at a steady 100 publishes/s to 100 subscribers
#              (10,000 deliveries/s, far from saturation): the latency Redis adds
#   redis      what one Redis sustains of ringpush's append script (XADD + PUBLISH in
#              one EVALSHA), with redis-benchmark, 1 / 16 / 64 commands per pipeline
#
# Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools). Everything
# started here is stopped by PID; the Redis is on a free port with no persistence.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
ROWS=${ROWS:-"broadcast latency redis"}

if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/ringpush
fi
command -v redis-server >/dev/null || { echo "cluster-bench.sh: redis-server is not installed" >&2; exit 2; }

work=$(mktemp -d -t ringpush-cluster-bench.XXXXXX)
PIDS=()
REDIS_PID=
stop_all() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_all
    [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" >"$work/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 1 50); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

# start_node NAME SHARDS [flags...]: a server; its port in PORT_<NAME>.
start_node() {
    local name=$1 shards=$2
    shift 2
    "$BIN" serve --listen 127.0.0.1:0 --shards "$shards" "$@" 2>"$work/$name.err" &
    PIDS+=($!)
    for _ in $(seq 1 50); do
        grep -q "listening on" "$work/$name.err" && break
        sleep 0.1
    done
    local port
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$work/$name.err" | cut -d: -f2)
    [ -n "$port" ] || { echo "cluster-bench.sh: $name did not start: $(cat "$work/$name.err")" >&2; exit 1; }
    printf -v "PORT_$name" '%s' "$port"
}

# setup KIND: starts the servers of a set-up and sets URLS (one per node).
setup() {
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    case $1 in
        single)
            start_node a 2
            URLS=("ws://127.0.0.1:$PORT_a")
            ;;
        one)
            start_node a 2 --redis "$REDIS_URL" --node-id a
            URLS=("ws://127.0.0.1:$PORT_a")
            ;;
        three)
            start_node a 1 --redis "$REDIS_URL" --node-id a
            start_node b 1 --redis "$REDIS_URL" --node-id b
            start_node c 1 --redis "$REDIS_URL" --node-id c
            URLS=("ws://127.0.0.1:$PORT_a" "ws://127.0.0.1:$PORT_b" "ws://127.0.0.1:$PORT_c")
            ;;
    esac
}

field() {
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"
}

median() {
    sort -g | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'
}

# run NAME KIND CONNECTIONS [load flags...]
run() {
    local name=$1 kind=$2 conns=$3
    shift 3
    local rates=() lats=()
    for i in $(seq 1 "$RUNS"); do
        setup "$kind"
        local args=() out="$work/run.json"
        for u in "${URLS[@]}"; do args+=(--url "$u/ws/bench"); done
        "$BIN" load "${args[@]}" --scenario broadcast --connections "$conns" \
            --duration "$DURATION" --threads "$THREADS" --rate 50000 --json "$@" \
            >"$out" 2>"$work/load.err" || { cat "$work/load.err" >&2; exit 1; }
        stop_all
        rates+=("$(field "$out" "f\"{r['received_per_sec']:.0f}\"")")
        lats+=("$(field "$out" "f\"{r['latency_us']['p50']} / {r['latency_us']['p99']} us\"")")
        echo "  $name run $i: ${rates[-1]} deliveries/s | ${lats[-1]}" >&2
    done
    printf '| %s | %s deliveries/s | %s |\n' "$name" \
        "$(printf '%s\n' "${rates[@]}" | median)" \
        "$(printf '%s\n' "${lats[@]}" | median)"
}

echo "| set-up | result (median of $RUNS) | publish-to-delivery p50 / p99 |"
echo "|---|---:|---:|"
for row in $ROWS; do
    case $row in
        broadcast)
            run "broadcast 10,000: one node, no Redis (2 shards)" single 10000
            run "broadcast 10,000: one node over Redis (2 shards)" one 10000
            run "broadcast 10,000: three nodes over Redis (1 shard each)" three 10000
            ;;
        latency)
            run "100 publishes/s to 100: one node, no Redis" single 100 --publish-rate 100
            run "100 publishes/s to 100: one node over Redis" one 100 --publish-rate 100
            run "100 publishes/s to 100: three nodes over Redis" three 100 --publish-rate 100
            ;;
        redis)
            sha=$(redis-cli -p "$REDIS_PORT" script load "$(sed -n '/^pub const APPEND: &str = r"/,/^";/p' src/cluster/wire.rs | sed '1d;$d')")
            payload=$(head -c 40 /dev/zero | tr '\0' x)
            for p in 1 16 64; do
                rps=$(redis-benchmark -p "$REDIS_PORT" -n 200000 -c 8 -P "$p" -q \
                    evalsha "$sha" 3 'ringpush:{bench}' 'ringpush:{bench}:born' 'ringpush:{bench}:born' 1024 0 "$payload" PUBLISH 0 \
                    | grep -o '[0-9.]* requests per second' | cut -d' ' -f1)
                printf '| Redis alone: the append script, %s per pipeline, 8 clients | %s appends/s | |\n' "$p" "$rps"
            done
            ;;
        *) echo "cluster-bench.sh: unknown row $row (broadcast, latency, redis)" >&2; exit 2 ;;
    esac
done
