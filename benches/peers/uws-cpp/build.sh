#!/usr/bin/env bash
# Build the uWebSockets (C++) peer from a uWebSockets source checkout:
#
#   git clone --recursive https://github.com/uNetworking/uWebSockets /path/to/uWebSockets
#   UWS_SRC=/path/to/uWebSockets benches/peers/uws-cpp/build.sh
#
# uSockets is expected inside it at uSockets/ (upstream's submodule). Nothing of theirs is
# copied into this repository: the objects and the binary go to build/ beside this script
# (git-ignored). Flags: uSockets as its Makefile builds it without TLS (-DLIBUS_NO_SSL,
# epoll), uWebSockets without zlib (-DUWS_NO_ZLIB), both -O3 -flto (upstream's defaults)
# and -march=x86-64-v3 (ringpush's target, .cargo/config.toml; upstream's build.c uses
# -march=native). Compiler: $CC / $CXX, default Debian's gcc / g++.
# Without a usable UWS_SRC: one line on stderr and exit 1, so compare.sh skips the peer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ -z "${UWS_SRC:-}" ]; then
    echo "uws-cpp: skipped: UWS_SRC is not set (a 'git clone --recursive' of github.com/uNetworking/uWebSockets; see benches/peers/README.md)" >&2
    exit 1
fi
if [ ! -f "$UWS_SRC/src/App.h" ] || [ ! -f "$UWS_SRC/uSockets/src/libusockets.h" ]; then
    echo "uws-cpp: skipped: UWS_SRC=$UWS_SRC is not a uWebSockets checkout with uSockets/ inside (git clone --recursive)" >&2
    exit 1
fi
src=$(cd "$UWS_SRC" && pwd)
CC=${CC:-gcc}
CXX=${CXX:-g++}
for tool in "$CC" "$CXX"; do
    command -v "$tool" >/dev/null || { echo "uws-cpp: skipped: no $tool (apt-get install g++)" >&2; exit 1; }
done

# The exact sources, for the start line and benches/peers/README.md.
describe() {
    local d=$1
    if git -C "$d" rev-parse HEAD >/dev/null 2>&1; then
        local rev desc dirty=""
        rev=$(git -C "$d" rev-parse HEAD)
        desc=$(git -C "$d" describe --tags --always 2>/dev/null || echo "$rev")
        git -C "$d" diff --quiet HEAD -- 2>/dev/null || dirty=", modified"
        echo "$desc ($rev$dirty)"
    else
        echo "(not a git checkout)"
    fi
}
uws_rev=$(describe "$src")
us_rev=$(describe "$src/uSockets")
cc_ver=$("$CXX" -dumpfullversion 2>/dev/null || "$CXX" -dumpversion)
info="uWebSockets $uws_rev, uSockets $us_rev, $(basename "$CXX") $cc_ver"

out="$here/build"
rm -rf "$out/obj"
mkdir -p "$out/obj"
opt=(-O3 -march=x86-64-v3 -flto=auto)

# uSockets: the C files its Makefile compiles (TLS, io_uring and QUIC files compile to
# nothing without their macros).
objs=()
for f in "$src"/uSockets/src/*.c "$src"/uSockets/src/eventing/*.c "$src"/uSockets/src/crypto/*.c \
    "$src"/uSockets/src/io_uring/*.c; do
    [ -e "$f" ] || continue
    o="$out/obj/$(basename "$(dirname "$f")")-$(basename "${f%.c}").o"
    "$CC" "${opt[@]}" -DLIBUS_NO_SSL -std=c11 -I"$src/uSockets/src" -c "$f" -o "$o" &
    objs+=("$o")
done
wait

"$CXX" "${opt[@]}" -std=c++2b -DLIBUS_NO_SSL -DUWS_NO_ZLIB -Wall -Wextra \
    -DPEER_BUILD_INFO="\"$info\"" \
    -I"$src/src" -I"$src/uSockets/src" \
    "$here/peer.cpp" "${objs[@]}" -pthread -o "$out/uws-cpp-peer.tmp"
mv "$out/uws-cpp-peer.tmp" "$out/uws-cpp-peer"
echo "$info" >"$out/BUILD_INFO"
echo "built $out/uws-cpp-peer ($info; -O3 -march=x86-64-v3 -flto, LIBUS_NO_SSL, UWS_NO_ZLIB)"
