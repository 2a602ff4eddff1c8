#!/usr/bin/env bash
# Start the Node ws peer: run.sh --listen 127.0.0.1:PORT --threads N
# Node (libuv) raises the soft RLIMIT_NOFILE to the hard limit itself at startup; the
# ulimit below only makes that explicit for shells that start node with a lower one.
cd "$(dirname "$0")"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec node server.mjs "$@"
