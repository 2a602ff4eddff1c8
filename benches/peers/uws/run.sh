#!/usr/bin/env bash
# Start the uWebSockets peer: run.sh --listen 127.0.0.1:PORT --threads N
# Node raises the soft RLIMIT_NOFILE to the hard limit itself; the ulimit is explicit.
cd "$(dirname "$0")"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec node server.mjs "$@"
