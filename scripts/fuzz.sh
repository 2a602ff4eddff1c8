#!/usr/bin/env bash
# Runs one cargo-fuzz target for N seconds on the stable toolchain.
#
#   scripts/fuzz.sh --list                 the targets
#   scripts/fuzz.sh TARGET [SECONDS=60]    fuzz TARGET, starting from fuzz/seeds/TARGET
#
# New corpus entries go to fuzz/corpus/TARGET (not committed); crashes to fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if [ "${1:-}" = "--list" ]; then
    sed -n 's/^name = "\([a-z_]*\)"$/\1/p' Cargo.toml | grep -v '^ringpush-fuzz$'
    exit 0
fi
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}
seconds=${2:-60}
mkdir -p "corpus/$target"
# cargo-fuzz needs nightly flags (-Zsanitizer); RUSTC_BOOTSTRAP lets the stable compiler accept them.
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
