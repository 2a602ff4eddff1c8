#!/usr/bin/env bash
# The headline run: N (default 1,000,000) concurrent WebSockets to one `ringpush serve`
# on this host, then one broadcast to all of them; or, with SCENARIO=idle, just hold them.
#
#   sudo scripts/million.sh              1,000,000 connections, one broadcast
#   sudo SCENARIO=idle scripts/million.sh 1000000
#   sudo LEAVE=close scripts/million.sh   everyone leaves with a close frame at the end
#   sudo scripts/million.sh 200000
#   sudo SCENARIO=storm scripts/million.sh          the reconnect storm: all cut at once
#   sudo SCENARIO=storm NO_JITTER=1 scripts/million.sh   ... without jitter
#   sudo SERVER=kernel scripts/million.sh    the same load against the kernel baseline
#                                      (benches/peers/rust raw-echo ws: ringpush's io_uring
#                                      driver, no protocol work), the yardstick of issue 16
#   sudo SCENARIO=topics scripts/million.sh  issue 16's sustained row: N subscribers over
#                                      TOPICS topics, publishes stepped through RATES
#   sudo SCENARIO=topics scripts/million.sh 100000   the same at 100,000 (1,000 topics)
#   sudo SCENARIO=echo scripts/million.sh     every connection echoes (closed loop, one
#                                      message in flight each), for DURATION
#   sudo SERVER_FLAGS="--ping-interval 600s" SCENARIO=idle scripts/million.sh
#                                      extra flags for `ringpush serve`
#
# Applies tuning/99-ringpush.conf with scripts/tune.sh (restored on exit, whatever
# happens, the server's exit status included), prints the server's memory and fd count
# every 5 s, and stops the load early if MemAvailable falls under MIN_AVAIL_KB (default
# 2.5 GB). Then the way down: the load generator exits (LEAVE=drop, the default: the
# kernel closes its sockets, as when a network drops everyone) or first closes every
# WebSocket with a close frame (LEAVE=close), and the script times until the server's
# gauge shows no WebSocket, probing /healthz all along. The report is the load
# generator's JSON, in $OUT (default target/million.json).
#
# SCENARIO=storm: once all are open, the load generator cuts every connection at the
# same moment (CUT_AFTER into the run, default 5s) and each reconnects after its backoff
# delay (full jitter; NO_JITTER=1 for the herd), for DURATION (default 120s then); the
# report shows the reconnects per 100 ms, when the last was back and the handshake
# latency meanwhile.
#
# SCENARIO=topics: the sustained row. Subscriber i subscribes to all-(i mod TOPICS)
# (default: N / 100 topics, 100 subscribers each: 10,000 at a million); the load
# generator's HTTP publishers (POST /publish, pipelined) publish round-robin over the
# topics at each rate of RATES in turn (default 100,200,500,1000,2000 publishes/s: 100
# subscribers a topic, that is 10,000 to 200,000 deliveries/s; on this 2-core host the
# server saturated near 50,000 deliveries/s at 100,000 subscribers),
# DURATION each (default 20s), with a drain between steps, all on the one connect phase.
# The table at the end gives per step the publishes and deliveries per second, the
# publish-to-delivery latency (p50, p99, max), the deliveries missing after the step's
# drain and the CPU of the server and of the load generator. Not with SERVER=kernel: the
# kernel baseline has no topics (it relays what one connection sends to all the others).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
SCENARIO=${SCENARIO:-broadcast}
if [ "$SCENARIO" = storm ]; then DURATION=${DURATION:-120s}; else DURATION=${DURATION:-20s}; fi
CUT_AFTER=${CUT_AFTER:-5s}
TOPICS=${TOPICS:-$(( N / 100 > 1 ? N / 100 : 1 ))}
RATES=${RATES:-100,200,500,1000,2000}
# The load generator's scenario and its flags for this one.
load_scenario=$SCENARIO
scenario_flags=()
case "$SCENARIO" in
    storm)
        scenario_flags=(--cut-after "$CUT_AFTER")
        [ -n "${NO_JITTER:-}" ] && scenario_flags+=(--no-jitter)
        ;;
    topics)
        load_scenario=broadcast
        scenario_flags=(--topics "$TOPICS" --publish-rate "$RATES")
        ;;
    echo) ;;
    *) scenario_flags=(--messages 1) ;;
esac
# Echo goes to /echo (ringpush's and the kernel baseline's echo endpoint); the rest
# subscribe to one topic.
path=/ws/all
[ "$SCENARIO" = echo ] && path=/echo
LEAVE=${LEAVE:-drop}
MIN_AVAIL_KB=${MIN_AVAIL_KB:-2500000}
OUT=${OUT:-target/million.json}
# BIN: a build to use as it is (else this checkout's, rebuilt); SERVER_BIN: another
# build as the server under test, to compare (the load generator is always BIN).
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/ringpush
fi
SERVER_BIN=${SERVER_BIN:-$BIN}
SERVER=${SERVER:-ringpush}
if [ "$SERVER" = kernel ] && [ "$SCENARIO" = topics ]; then
    echo "million.sh: SCENARIO=topics needs ringpush (the kernel baseline has no topics)" >&2
    exit 2
fi
KERNEL_BIN=benches/peers/rust/target/release/raw-echo
if [ "$SERVER" = kernel ]; then
    cargo build --release --quiet --manifest-path benches/peers/rust/Cargo.toml -p raw-echo
fi
scripts/tune.sh apply "$N" >/dev/null
srv_err=$(mktemp -t ringpush-million.XXXXXX)
SRV=
LOAD=
# Runs on any exit; must reach the restore whatever fails before it (no errexit here: a
# server that exits non-zero, or must be killed, would otherwise stop it early).
cleanup() {
    set +e
    [ -n "$LOAD" ] && kill "$LOAD" 2>/dev/null
    if [ -n "$SRV" ] && kill -TERM "$SRV" 2>/dev/null; then
        for _ in $(seq 1 300); do kill -0 "$SRV" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SRV" 2>/dev/null
        wait "$SRV" 2>/dev/null
    fi
    scripts/tune.sh restore >/dev/null || echo "million.sh: scripts/tune.sh restore failed" >&2
    rm -f "$srv_err"
}
trap cleanup EXIT

if [ "$SERVER" = kernel ]; then
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$KERNEL_BIN" ws --listen "127.0.0.1:$PORT" --max-conns "$((N + 1))" 2>"$srv_err" &
    SRV=$!
    for _ in $(seq 1 50); do
        python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.2)' "$PORT" 2>/dev/null && break
        sleep 0.1
    done
else
    # shellcheck disable=SC2086 # SERVER_FLAGS: words, on purpose
    "$SERVER_BIN" serve --listen 127.0.0.1:0 ${SERVER_FLAGS:-} 2>"$srv_err" &
    SRV=$!
    for _ in $(seq 1 50); do grep -q "listening on" "$srv_err" && break; sleep 0.1; done
    PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$srv_err" | cut -d: -f2)
fi
[ -n "$PORT" ] && kill -0 "$SRV" 2>/dev/null || { echo "million.sh: server did not start: $(cat "$srv_err")" >&2; exit 1; }
echo "server pid $SRV on port $PORT; $(grep MemAvailable /proc/meminfo)"

"$BIN" load --url "ws://127.0.0.1:$PORT$path" --scenario "$load_scenario" \
    --connections "$N" --rate 50000 --duration "$DURATION" --leave "$LEAVE" "${scenario_flags[@]}" --json >"$OUT" 2>/dev/null &
LOAD=$!
while kill -0 "$LOAD" 2>/dev/null; do
    avail=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
    if [ "$avail" -lt "$MIN_AVAIL_KB" ]; then
        echo "million.sh: MemAvailable ${avail} kB < ${MIN_AVAIL_KB} kB: stopping early" >&2
        kill "$LOAD"
        break
    fi
    printf '%s MemAvailable %s kB, server %s, %s fds\n' "$(date +%T)" "$avail" \
        "$(grep VmRSS "/proc/$SRV/status" | tr -s ' ')" "$(ls "/proc/$SRV/fd" | wc -l)"
    sleep 5
done
wait "$LOAD" && status=0 || status=$?
LOAD=
echo "load exit $status; report in $OUT"
# The way down: how long until the server's gauge shows no WebSocket, and its slowest
# /healthz answer meanwhile (bounded: 120 s). Every 5 s a line with the system's TCP
# sockets (/proc/net/sockstat: both ends of every connection, and orphans: client
# sockets the exiting load generator's kernel teardown has closed) and the server's CPU
# share, to tell whether the server or the kernel's teardown sets the pace.
[ "$SERVER" = kernel ] || python3 - "$PORT" "$SRV" <<'PY' || echo "million.sh: could not follow the way down" >&2
import os, sys, time, urllib.request
port, pid = sys.argv[1], sys.argv[2]
tick = os.sysconf("SC_CLK_TCK")
def get(path):
    t = time.monotonic()
    body = urllib.request.urlopen("http://127.0.0.1:%s%s" % (port, path), timeout=30).read().decode()
    return body, time.monotonic() - t
def cpu():
    f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
def tcp():
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            f = line.split()
            return int(f[2]), int(f[4])
start, slowest = time.monotonic(), 0.0
last_t, last_cpu, next_line = start, cpu(), start
while True:
    _, took = get("/healthz")
    slowest = max(slowest, took)
    m, _ = get("/metrics")
    ws = sum(int(l.rsplit(" ", 1)[1]) for l in m.splitlines()
             if l.startswith("ringpush_connections{") and 'transport="ws"' in l)
    now = time.monotonic()
    if now >= next_line or ws == 0:
        c = cpu()
        inuse, orphan = tcp()
        print("  %5.1f s: %d WebSockets open; TCP sockets %d (orphans %d); server CPU %.0f %% of a core"
              % (now - start, ws, inuse, orphan, 100 * (c - last_cpu) / max(now - last_t, 1e-9)))
        last_t, last_cpu, next_line = now, c, now + 5
    if ws == 0 or now - start > 120:
        break
    time.sleep(0.1)
print("way down: %d WebSockets open %.1f s after the load generator exited; slowest /healthz %.3f s"
      % (ws, time.monotonic() - start, slowest))
PY
python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["latency_us"]
print("connected %d in %.1f s, open at end %d" % (r["connected"], r["connect_secs"], r["open_at_end"]))
if r.get("leave_secs") is not None:
    print("leave: every close frame answered in %.1f s (%d left)" % (r["leave_secs"], r["leave_left"]))
print("server RSS +%.0f B per connection, kernel slab +%.0f B per connection pair"
      % (r["server_rss_per_conn"], r["kernel_slab_per_conn"]))
if r["scenario"] == "broadcast":
    print("broadcast: %d of %d delivered; p50 %.0f ms, last %.0f ms"
          % (r["received"], r["expected_deliveries"], lat["p50"] / 1e3, lat["max"] / 1e3))
if r["scenario"] == "echo":
    print("echo: %.0f msg/s over %.1f s, p50 %.1f ms, p99 %.1f ms; server CPU %s us per message"
          % (r["received_per_sec"], r["run_secs"], lat["p50"] / 1e3, lat["p99"] / 1e3,
             "-" if r["server_cpu_us_per_message"] is None else "%.2f" % r["server_cpu_us_per_message"]))
if r["scenario"] == "broadcast" and r["topics"] > 1:
    t = r["topic_check"] or {}
    print("%d subscribers over %d topics, %d publishers; %s of %s subscribers exact (%s short, %s of another topic)"
          % (r["connections"], r["topics"], r["publishers"], t.get("exact"), t.get("subscribers"),
             t.get("short"), t.get("wrong_topic")))
    print("%8s %12s %13s %9s %9s %9s %9s %10s %9s" % ("rate/s", "published/s", "deliveries/s", "p50 ms",
          "p99 ms", "max ms", "missing", "server CPU", "load CPU"))
    for s in r["steps"]:
        secs = max(s["secs"] + s["drain_secs"], 1e-9)
        cpu = lambda c: "-" if c is None else "%.0f%%" % (100 * c / secs)
        l = s["latency_us"]
        print("%8s %12.0f %13.0f %9.1f %9.1f %9.1f %9d %10s %9s"
              % ("max" if s["publish_rate"] is None else "%.0f" % s["publish_rate"], s["published_per_sec"],
                 s["received_per_sec"], l["p50"] / 1e3, l["p99"] / 1e3, l["max"] / 1e3, s["missing"],
                 cpu(s["server_cpu_secs"]), cpu(s["load_cpu_secs"])))
st = r.get("storm")
if st and st.get("cut"):
    hs = st["handshake_us"]
    b = st["attempts_per_100ms"]
    print("storm: %d cut (sockets closed in %d ms), %d back, all back within %s ms; peak %d attempts/s; reconnect handshake p50 %.0f ms, p99 %.0f ms, max %.0f ms"
          % (st["cut"], st["cut_closed_ms"] or 0, st["cut_reconnected"], st["all_back_ms"],
             st["peak_attempts_per_sec"], hs["p50"] / 1e3, hs["p99"] / 1e3, hs["max"] / 1e3))
    print("attempts per second, by second since the cut: " + " ".join(str(sum(b[i:i + 10])) for i in range(0, len(b), 10)))
if r["errors"]:
    print("client errors: " + ", ".join("%s x%d" % (e, n) for e, n in r["errors"]))
' "$OUT"
# How the server saw connections end: in a clean run only peer_eof, the load generator
# closing its sockets as it exits.
[ "$SERVER" = kernel ] || python3 -c '
import sys, urllib.request
m = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=10).read().decode()
n = {}
for line in m.splitlines():
    if line.startswith("ringpush_disconnects_total{"):
        reason = line.split("reason=\"")[1].split("\"")[0]
        n[reason] = n.get(reason, 0) + int(line.rsplit(" ", 1)[1])
print("server disconnects (peer_eof includes the load generator exiting): " + (", ".join("%s %d" % kv for kv in sorted(n.items()) if kv[1]) or "none"))
' "$PORT" || echo "million.sh: could not read /metrics" >&2
exit "$status"
