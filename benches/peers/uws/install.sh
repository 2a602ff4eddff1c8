#!/usr/bin/env bash
# Install the uWebSockets peer from the npm registry, as package-lock.json pins it.
# uWebSockets.js itself is not on npm (its authors publish it only as GitHub releases);
# the package `uwebsockets` (3.0.6) republishes its prebuilt binaries, and its Node 16-21
# builds need glibc >= 2.27 (Debian 12 has 2.36). It is installed under the alias
# `uWebSockets.js`, the name the code imports. Idempotent: `npm ci` gives the same tree.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "install.sh: node and npm are missing (apt-get install -y nodejs npm)" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
npm ci --no-audit --no-fund --loglevel=error
node -e "require('uWebSockets.js').App(); console.log('uWebSockets.js binary loads on node', process.version)"
