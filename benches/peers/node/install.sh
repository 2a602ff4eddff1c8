#!/usr/bin/env bash
# Install the Node ws peer's packages from the npm registry, exactly as package-lock.json
# pins them (ws, and ws's optional native helpers bufferutil and utf-8-validate, whose npm
# packages carry prebuilt linux-x64 binaries). Idempotent: `npm ci` gives the same tree.
# Needs node >= 18.14 and npm; on a machine without them: apt-get install -y nodejs npm.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "install.sh: node and npm are missing (apt-get install -y nodejs npm)" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
npm ci --no-audit --no-fund --loglevel=error
node -e "require('bufferutil'); console.log('ws', require('ws/package.json').version, '+ bufferutil', require('bufferutil/package.json').version, 'on node', process.version)"
