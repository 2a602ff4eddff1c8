#!/usr/bin/env bash
# Build the gorilla/websocket peer from Debian's packages only (no module proxy):
# golang-go and golang-github-gorilla-websocket-dev, compiled in GOPATH mode against
# /usr/share/gocode. Idempotent: installs what is missing, rebuilds the binary.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/gorilla/websocket ]; then
    [ "$(id -u)" = 0 ] || { echo "build.sh: needs root to apt-get install golang-go golang-github-gorilla-websocket-dev" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-gorilla-websocket-dev
fi
export GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off
export GOCACHE="${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/go-build}"
go build -trimpath -o gorilla-peer main.go
echo "built $(pwd)/gorilla-peer ($(go version | cut -d' ' -f3), gorilla/websocket $(dpkg-query -W -f='${Version}' golang-github-gorilla-websocket-dev))"
