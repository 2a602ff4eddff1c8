#!/usr/bin/env bash
# Syntax-checks the samples in tuning/ with the real tools, changing nothing on the host:
#
#   tuning/validate.sh
#
#   nginx.conf          nginx -t (on a copy whose log and pid paths point to a temp dir)
#   nginx-stream.conf   the same, when nginx's stream module is installed
#   haproxy.cfg         haproxy -c (and cluster/haproxy.cfg)
#   cluster/ringpush.toml  ringpush serve --check-config
#   ringpush.service    systemd-analyze verify (on a copy whose ExecStart is /bin/true)
#   99-ringpush.conf    every key exists under /proc/sys ("-" keys may be absent)
#
# A missing tool prints "SKIP: ..." (Debian: apt-get install nginx-light haproxy).
# Exit status: 0 when every available check passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")"

tmp=$(mktemp -d -t ringpush-validate.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failed=0

pass() { echo "ok:   $1"; }
fail() { echo "FAIL: $1" >&2; failed=1; }

if command -v nginx >/dev/null 2>&1; then
    sed -e "s#/var/log/nginx/#$tmp/#" -e "s#/run/nginx-ringpush.pid#$tmp/nginx.pid#" \
        nginx.conf >"$tmp/nginx.conf"
    if out=$(nginx -t -q -e "$tmp/error.log" -c "$tmp/nginx.conf" 2>&1); then
        pass "nginx.conf ($(nginx -v 2>&1 | sed 's/^nginx version: //'))"
    else
        fail "nginx.conf: $out"
    fi
    if [ -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
        sed -e "s#/var/log/nginx/#$tmp/#" -e "s#/run/nginx-ringpush-stream.pid#$tmp/nginx-stream.pid#" \
            nginx-stream.conf >"$tmp/nginx-stream.conf"
        if out=$(nginx -t -q -e "$tmp/error.log" -c "$tmp/nginx-stream.conf" 2>&1); then
            pass "nginx-stream.conf"
        else
            fail "nginx-stream.conf: $out"
        fi
    else
        echo "SKIP: nginx-stream.conf: nginx's stream module is not installed (libnginx-mod-stream)"
    fi
else
    echo "SKIP: nginx.conf, nginx-stream.conf: nginx is not installed"
fi

if command -v haproxy >/dev/null 2>&1; then
    for cfg in haproxy.cfg cluster/haproxy.cfg; do
        if out=$(haproxy -c -q -f "$cfg" 2>&1); then
            pass "$cfg ($(haproxy -v | head -n1 | cut -d' ' -f1-3))"
        else
            fail "$cfg: $out"
        fi
    done
else
    echo "SKIP: haproxy.cfg, cluster/haproxy.cfg: haproxy is not installed"
fi

# The cluster sample's TOML: the real parser, as --check-config reads it.
if [ -x ../target/release/ringpush ] || [ -x ../target/debug/ringpush ]; then
    bin=../target/release/ringpush
    [ -x "$bin" ] || bin=../target/debug/ringpush
    if out=$("$bin" serve --config cluster/ringpush.toml --check-config 2>&1 >/dev/null); then
        pass "cluster/ringpush.toml"
    else
        fail "cluster/ringpush.toml: $out"
    fi
else
    echo "SKIP: cluster/ringpush.toml: no ringpush build in target/"
fi

if command -v systemd-analyze >/dev/null 2>&1; then
    # verify insists that ExecStart's binary exists; the unit's own path need not here.
    sed -e "s#/usr/local/bin/ringpush#/bin/true#g" ringpush.service >"$tmp/ringpush.service"
    if out=$(systemd-analyze verify --man=no "$tmp/ringpush.service" 2>&1) && [ -z "$out" ]; then
        pass "ringpush.service"
    else
        fail "ringpush.service: $out"
    fi
else
    echo "SKIP: ringpush.service: systemd-analyze is not installed"
fi

bad=0
while IFS= read -r line; do
    line=${line%%#*}
    [[ $line =~ ^[[:space:]]*$ ]] && continue
    key=${line%%=*}
    key=${key//[[:space:]]/}
    optional=0
    [[ $key == -* ]] && optional=1 && key=${key#-}
    if [[ ! $line == *=* ]]; then
        fail "99-ringpush.conf: not 'key = value': $line"
        bad=1
    elif [ ! -e "/proc/sys/${key//.//}" ] && [ "$optional" = 0 ]; then
        fail "99-ringpush.conf: $key does not exist on this kernel"
        bad=1
    fi
done <99-ringpush.conf
[ "$bad" = 0 ] && pass "99-ringpush.conf"

exit "$failed"
