#!/usr/bin/env bash
# The headline run: N (default 1,000,000) concurrent WebSockets to one `ringpush serve`
# on this host, then one broadcast to all of them; or, with SCENARIO=idle, just hold them.
#
#   sudo scripts/million.sh              1,000,000 connections, one broadcast
#   sudo SCENARIO=idle scripts/million.sh 1000000
#   sudo LEAVE=close scripts/million.sh   everyone leaves with a close frame at the end
#   sudo scripts/million.sh 200000
#
# Applies tuning/99-ringpush.conf with scripts/tune.sh (restored on exit, whatever
# happens, the server's exit status included), prints the server's memory and fd count
# every 5 s, and stops the load early if MemAvailable falls under MIN_AVAIL_KB (default
# 2.5 GB). Then the way down: the load generator exits (LEAVE=drop, the default: the
# kernel closes its sockets, as when a network drops everyone) or first closes every
# WebSocket with a close frame (LEAVE=close), and the script times until the server's
# gauge shows no WebSocket, probing /healthz all along. The report is the load
# generator's JSON, in $OUT (default target/million.json).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
SCENARIO=${SCENARIO:-broadcast}
DURATION=${DURATION:-20s}
LEAVE=${LEAVE:-drop}
MIN_AVAIL_KB=${MIN_AVAIL_KB:-2500000}
OUT=${OUT:-target/million.json}
BIN=target/release/ringpush
# The server under test (another build, to compare); the load generator is always this one.
SERVER_BIN=${SERVER_BIN:-$BIN}

cargo build --release --quiet
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

"$SERVER_BIN" serve --listen 127.0.0.1:0 2>"$srv_err" &
SRV=$!
for _ in $(seq 1 50); do grep -q "listening on" "$srv_err" && break; sleep 0.1; done
PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$srv_err" | cut -d: -f2)
[ -n "$PORT" ] || { echo "million.sh: server did not start: $(cat "$srv_err")" >&2; exit 1; }
echo "server pid $SRV on port $PORT; $(grep MemAvailable /proc/meminfo)"

"$BIN" load --url "ws://127.0.0.1:$PORT/ws/all" --scenario "$SCENARIO" --messages 1 \
    --connections "$N" --rate 50000 --duration "$DURATION" --leave "$LEAVE" --json >"$OUT" 2>/dev/null &
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
# /healthz answer meanwhile (bounded: 120 s).
python3 - "$PORT" <<'PY' || echo "million.sh: could not follow the way down" >&2
import sys, time, urllib.request
port = sys.argv[1]
def get(path):
    t = time.monotonic()
    body = urllib.request.urlopen("http://127.0.0.1:%s%s" % (port, path), timeout=30).read().decode()
    return body, time.monotonic() - t
start, slowest = time.monotonic(), 0.0
while True:
    _, took = get("/healthz")
    slowest = max(slowest, took)
    m, _ = get("/metrics")
    ws = sum(int(l.rsplit(" ", 1)[1]) for l in m.splitlines()
             if l.startswith("ringpush_connections{") and 'transport="ws"' in l)
    if ws == 0 or time.monotonic() - start > 120:
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
if r["errors"]:
    print("client errors: " + ", ".join("%s x%d" % (e, n) for e, n in r["errors"]))
' "$OUT"
# How the server saw connections end: in a clean run only peer_eof, the load generator
# closing its sockets as it exits.
python3 -c '
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
