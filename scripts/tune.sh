#!/usr/bin/env bash
# Checks, applies and restores the kernel settings for many connections. The sizing and
# the verdicts live in Rust (`ringpush check`); this script only reads and writes sysctls.
usage() {
    cat <<'EOF'
usage: scripts/tune.sh check [N] [--json]   compare this machine with N connections
       scripts/tune.sh apply [N]            set tuning/99-ringpush.conf for this boot
       scripts/tune.sh restore              put back the values saved by apply

  check    runs `ringpush check --connections N` (N defaults to 1000000); changes
           nothing. Exit status as ringpush check: 0 ok, 1 warn, 2 fail; 3 when no
           ringpush binary was found (it then lists the values it would compare).
  apply    saves the current value of every key in the file to the state file, then
           sets the file's values with sysctl -w. A single-number limit already above
           the file's value is kept (never lowered). Refuses to run while a saved state
           exists, so a second apply cannot lose the originals. Then runs check N.
  restore  writes the saved values back and deletes the state file.

environment:
  RINGPUSH_BIN          ringpush binary (default: target/release/ringpush, then
                        target/debug/ringpush)
  RINGPUSH_TUNE_STATE   state file (default: /var/tmp/ringpush-tune.saved)
  RINGPUSH_TUNE_CONF    settings to apply (default: tuning/99-ringpush.conf)

apply and restore need root. Nothing here survives a reboot; for that install the file
into /etc/sysctl.d/ (see tuning/README.md).
EOF
}
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
STATE=${RINGPUSH_TUNE_STATE:-/var/tmp/ringpush-tune.saved}
CONF=${RINGPUSH_TUNE_CONF:-$root/tuning/99-ringpush.conf}
DEFAULT_N=1000000

die() {
    echo "tune.sh: $*" >&2
    exit 1
}

usage_error() {
    echo "tune.sh: $*" >&2
    echo "run 'scripts/tune.sh --help' for usage" >&2
    exit 2
}

connections() {
    local n=${1:-$DEFAULT_N}
    [[ $n =~ ^[1-9][0-9]*$ ]] || usage_error "N must be a positive whole number of connections, not '$n'"
    echo "$n"
}

find_bin() {
    if [ -n "${RINGPUSH_BIN:-}" ]; then
        [ -x "$RINGPUSH_BIN" ] || die "RINGPUSH_BIN=$RINGPUSH_BIN is not an executable file"
        echo "$RINGPUSH_BIN"
        return
    fi
    local b
    for b in "$root/target/release/ringpush" "$root/target/debug/ringpush"; do
        if [ -x "$b" ]; then
            echo "$b"
            return
        fi
    done
}

need_root() {
    [ "$(id -u)" = 0 ] || die "$1 needs root (it writes /proc/sys); run it with sudo"
}

# sysctl values with runs of blanks (the kernel separates fields with tabs) as one space.
normalize() {
    local v
    read -r -a v <<<"$1"
    echo "${v[*]}"
}

proc_path() {
    echo "/proc/sys/${1//.//}"
}

# Prints "optional key value" for each setting of the conf file (optional: 1 for a
# leading "-", which means: the key may not exist on this kernel).
settings() {
    [ -r "$CONF" ] || die "cannot read $CONF"
    local line key value optional
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%%#*}
        [[ $line =~ ^[[:space:]]*$ ]] && continue
        [[ $line == *=* ]] || die "$CONF: not a 'key = value' line: $line"
        key=$(normalize "${line%%=*}")
        value=$(normalize "${line#*=}")
        optional=0
        if [[ $key == -* ]]; then
            optional=1
            key=${key#-}
        fi
        echo "$optional $key $value"
    done <"$CONF"
}

# SETTINGS=("optional key value" ...) from the conf file; a bad file stops the script
# here (an error inside a pipe or process substitution would not).
load_settings() {
    local out
    out=$(settings) || exit 1
    SETTINGS=()
    [ -z "$out" ] || mapfile -t SETTINGS <<<"$out"
    [ ${#SETTINGS[@]} -gt 0 ] || die "$CONF has no settings"
}

cmd_check() {
    local n json=()
    while [ $# -gt 0 ]; do
        case $1 in
            --json) json=(--json) ;;
            *) [ -z "${n:-}" ] || usage_error "check takes one N"; n=$1 ;;
        esac
        shift
    done
    n=$(connections "${n:-}")
    local bin
    bin=$(find_bin)
    if [ -n "$bin" ]; then
        exec "$bin" check --connections "$n" "${json[@]}"
    fi
    echo "tune.sh: no ringpush binary (cargo build --release, or set RINGPUSH_BIN): no verdicts."
    echo "It would compare these values with what $n connections need:"
    load_settings
    local s optional key value path
    for s in "${SETTINGS[@]}"; do
        read -r optional key value <<<"$s"
        path=$(proc_path "$key")
        if [ -r "$path" ]; then
            printf '  %-32s %s\n' "$key" "$(normalize "$(<"$path")")"
        else
            printf '  %-32s %s\n' "$key" "(not on this kernel)"
        fi
    done
    printf '  %-32s %s\n' "RLIMIT_NOFILE" "soft $(ulimit -Sn), hard $(ulimit -Hn)"
    printf '  %-32s %s\n' "RLIMIT_MEMLOCK (KiB)" "$(ulimit -Sl)"
    printf '  %-32s %s\n' "MemAvailable" "$(awk '/^MemAvailable:/ {print $2, $3}' /proc/meminfo)"
    exit 3
}

cmd_apply() {
    [ $# -le 1 ] || usage_error "apply takes at most one N"
    local n
    n=$(connections "${1:-}")
    need_root apply
    if [ -e "$STATE" ]; then
        die "$STATE exists: an earlier apply was not restored. Run 'scripts/tune.sh restore' first (or delete the file if its values are stale)."
    fi
    load_settings
    local -a keys=() values=()
    local s optional key value path
    for s in "${SETTINGS[@]}"; do
        read -r optional key value <<<"$s"
        path=$(proc_path "$key")
        if [ ! -e "$path" ]; then
            [ "$optional" = 1 ] || die "$key does not exist on this kernel ($path); mark it optional with a leading '-' in $CONF"
            echo "skip  $key (not on this kernel)"
            continue
        fi
        keys+=("$key")
        values+=("$value")
    done

    # Every previous value is saved (atomically, in sysctl.conf format) before the first
    # write, so restore can always put all of them back.
    local tmp="$STATE.tmp.$$"
    {
        echo "# saved by scripts/tune.sh apply on $(date -u +%Y-%m-%dT%H:%M:%SZ); restore with scripts/tune.sh restore"
        for key in "${keys[@]}"; do
            echo "$key = $(normalize "$(<"$(proc_path "$key")")")"
        done
    } >"$tmp" || die "cannot write $tmp"
    mv "$tmp" "$STATE"
    echo "saved $STATE"

    local i cur
    for i in "${!keys[@]}"; do
        key=${keys[i]}
        value=${values[i]}
        cur=$(normalize "$(<"$(proc_path "$key")")")
        if [ "$cur" = "$value" ]; then
            echo "same  $key = $value"
        elif [[ $cur =~ ^[0-9]+$ && $value =~ ^[0-9]+$ && $key != kernel.io_uring_disabled ]] &&
            ((cur > value)); then
            # A larger limit is more room, never less: keep it. (io_uring_disabled is the
            # one key where a smaller number is the more permissive one.)
            echo "keep  $key = $cur (above $value)"
        else
            sysctl -q -w "$key=$value" >/dev/null || die "sysctl -w $key=$value failed; the previous values are in $STATE (scripts/tune.sh restore)"
            echo "set   $key = $value (was $cur)"
        fi
    done
    echo "applied; undo with: scripts/tune.sh restore"

    local bin
    bin=$(find_bin)
    if [ -n "$bin" ]; then
        echo
        "$bin" check --connections "$n" || true
    fi
}

cmd_restore() {
    [ $# -eq 0 ] || usage_error "restore takes no arguments"
    need_root restore
    [ -e "$STATE" ] || die "nothing to restore: $STATE does not exist"
    local line key value cur failed=0
    while IFS= read -r line || [ -n "$line" ]; do
        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
        key=$(normalize "${line%%=*}")
        value=$(normalize "${line#*=}")
        cur=$(normalize "$(<"$(proc_path "$key")")")
        if [ "$cur" = "$value" ]; then
            echo "same  $key = $value"
        elif sysctl -q -w "$key=$value" >/dev/null; then
            echo "set   $key = $value (was $cur)"
        else
            echo "tune.sh: could not restore $key = $value" >&2
            failed=1
        fi
    done <"$STATE"
    [ "$failed" = 0 ] || die "some values were not restored; $STATE is kept"
    rm -f "$STATE"
    echo "restored; removed $STATE"
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
cmd=$1
shift
case $cmd in
    check) cmd_check "$@" ;;
    apply) cmd_apply "$@" ;;
    restore) cmd_restore "$@" ;;
    -h | --help | help) usage ;;
    *) usage_error "unknown command '$cmd' (check, apply or restore)" ;;
esac
