#!/bin/sh
# Serves llmproxy in the foreground: `make run`.
#   LLMPROXY_SERVER      lighttpd (default) or apache (mod_proxy_fcgi)
#   LLMPROXY_PORT        port (1852)
#   LLMPROXY_BIND        address to listen on (127.0.0.1; 0.0.0.0 for every one)
#   LLMPROXY_STATE_DIR   routing file, runtime state, sockets, pid file (./var)
#   LLMPROXY_PROCS       responder processes (2)
#   LLMPROXY_BIN         responder program (cgi-bin/llmproxy.fcgi)
#   LLMPROXY_ADMIN_BIN   admin program (cgi-bin/llmproxy-admin.fcgi)
#   LLMPROXY_ADMIN_TOKEN admin token (default: generated once into the state dir)
#   LLMPROXY_CONFIG_ONLY=1  write the config and exit
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
port=${LLMPROXY_PORT:-1852}
bind=${LLMPROXY_BIND:-127.0.0.1}
state=${LLMPROXY_STATE_DIR:-$root/var}
procs=${LLMPROXY_PROCS:-2}
bin=${LLMPROXY_BIN:-$root/cgi-bin/llmproxy.fcgi}
admin_bin=${LLMPROXY_ADMIN_BIN:-$root/cgi-bin/llmproxy-admin.fcgi}
max_body=${LLMPROXY_MAX_BODY_BYTES:-16777216}
max_multipart=${LLMPROXY_MAX_MULTIPART_BYTES:-33554432}

mkdir -p "$state/tmp"
chmod 700 "$state"
state=$(cd "$state" && pwd)
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
case "$admin_bin" in /*) ;; *) admin_bin="$root/$admin_bin" ;; esac

routing="$state/dynamic_routing.json"
if [ ! -e "$routing" ]; then
    (umask 077 && cp "$root/etc/dynamic_routing.default.json" "$routing.tmp" && mv "$routing.tmp" "$routing")
    echo "llmproxy: wrote a default routing file to $routing" >&2
fi
if ! LLMPROXY_STATE_DIR="$state" "$admin_bin" --check; then
    echo "llmproxy: WARNING: the routing file is invalid; it is left untouched and" \
         "the proxy serves no models until it is fixed" >&2
fi
if [ -z "${LLMPROXY_ADMIN_TOKEN:-}" ]; then
    token=$(LLMPROXY_STATE_DIR="$state" "$admin_bin" --init-token)
    if [ -n "$token" ]; then
        echo "llmproxy: admin token (shown this once; kept in $state/admin.token): $token" >&2
    else
        echo "llmproxy: admin token: see $state/admin.token" >&2
    fi
fi

# as many fds as lighttpd may have (it counts them in 16 bits)
max_fds=$(ulimit -Hn)
case "$max_fds" in unlimited|""|*[!0-9]*) max_fds=65535 ;; esac
[ "$max_fds" -gt 65535 ] && max_fds=65535
max_conns=$(( max_fds / 2 ))

# lighttpd counts the request size cap in KiB; leave room for the JSON framing.
# The larger of the two caps: llmproxy holds each endpoint to its own.
max_req=$max_body
[ "$max_multipart" -gt "$max_req" ] && max_req=$max_multipart
max_kb=$(( max_req / 1024 + 64 ))

# lighttpd splits bin-path at spaces: reach programs in such a path through
# links in a directory of ours without spaces
case "$bin$admin_bin" in
*" "*|*"	"*)
    links="${TMPDIR:-/tmp}/llmproxy-$(id -u)-$(printf '%s' "$state" | cksum | cut -d' ' -f1)"
    mkdir -p "$links"
    chmod 0700 "$links"
    ln -sf "$bin" "$links/llmproxy.fcgi"
    ln -sf "$admin_bin" "$links/llmproxy-admin.fcgi"
    lbin="$links/llmproxy.fcgi"
    ladmin="$links/llmproxy-admin.fcgi"
    ;;
*)
    lbin="$bin"
    ladmin="$admin_bin"
    ;;
esac

conf="$state/lighttpd.conf"
sed -e "s|@BIND@|$bind|g" -e "s|@PORT@|$port|g" -e "s|@ROOT@|$root|g" \
    -e "s|@STATE@|$state|g" -e "s|@BIN@|$lbin|g" -e "s|@ADMIN_BIN@|$ladmin|g" -e "s|@PROCS@|$procs|g" \
    -e "s|@MAX_REQUEST_KB@|$max_kb|g" -e "s|@MAX_FDS@|$max_fds|g" -e "s|@MAX_CONNS@|$max_conns|g" \
    "$root/etc/lighttpd.conf.in" > "$conf.tmp"
mv "$conf.tmp" "$conf"
if [ "${LLMPROXY_SERVER:-lighttpd}" = apache ]; then
    # Apache spawns nothing for mod_proxy_fcgi: the programs listen on their
    # own sockets, children of this script, stopped with it. Apache's workers
    # must reach the sockets wherever the state dir is (inside /root, or a
    # 0700 directory): as root they go to /run/llmproxy-<id>, 0750 and the
    # sockets 0660, both group www-data (nobody else can connect); as anyone
    # else Apache's workers are that user and the sockets stay in the state dir.
    mkdir -p "$state/apache"
    id=$(printf '%s' "$state" | cksum | cut -d' ' -f1)
    user=""
    if [ "$(id -u)" -eq 0 ]; then
        user="User www-data
Group www-data"
        run="/run/llmproxy-$id"
        [ -d /run ] && [ -w /run ] || run="/tmp/llmproxy-$id"
        mkdir -p "$run"
        chown root:www-data "$run"
        chmod 0750 "$run"
    else
        run="$state/run"
        # a unix socket path has at most 107 bytes
        [ ${#run} -gt 80 ] && run="${TMPDIR:-/tmp}/llmproxy-$(id -u)-$id"
        mkdir -p "$run"
        chmod 0700 "$run"
    fi
    # the front page, where Apache's workers can read it
    cp "$root/htdocs/index.html" "$run/index.html"
    chmod 0644 "$run/index.html"
    [ "$(id -u)" -eq 0 ] && chgrp www-data "$run/index.html"
    echo "$run" > "$state/apache/run-dir"
    moddir=/usr/lib/apache2/modules
    conf="$state/apache.conf"
    awk -v user="$user" '{ if ($0 == "@USER@") print user; else print }' \
        "$root/etc/apache/llmproxy-standalone.conf.in" |
    sed -e "s|@BIND@|$bind|g" -e "s|@PORT@|$port|g" -e "s|@RUN@|$run|g" \
        -e "s|@STATE@|$state|g" -e "s|@MODDIR@|$moddir|g" \
        -e "s|@MAX_REQUEST_BYTES@|$((max_kb * 1024))|g" > "$conf.tmp"
    mv "$conf.tmp" "$conf"
    [ "${LLMPROXY_CONFIG_ONLY:-0}" = 1 ] && exit 0
    rm -f "$run/llmproxy.sock" "$run/admin.sock"
    pids=""
    stop() {
        trap - EXIT INT TERM HUP
        # shellcheck disable=SC2086
        [ -n "$pids" ] && kill $pids 2>/dev/null
        wait 2>/dev/null
        rm -f "$run/llmproxy.sock" "$run/admin.sock" "$run/index.html"
        [ "$run" != "$state/run" ] && rmdir "$run" 2>/dev/null
        exit 0
    }
    trap stop EXIT INT TERM HUP
    LLMPROXY_STATE_DIR="$state" "$bin" --socket "$run/llmproxy.sock" &
    pids="$!"
    LLMPROXY_STATE_DIR="$state" "$admin_bin" --socket "$run/admin.sock" &
    pids="$pids $!"
    i=0
    while [ ! -S "$run/llmproxy.sock" ] || [ ! -S "$run/admin.sock" ]; do
        i=$((i + 1))
        [ $i -gt 100 ] && { echo "llmproxy: the programs did not open their sockets" >&2; exit 1; }
        sleep 0.05
    done
    # the programs made them 0660: give them to Apache's group
    [ "$(id -u)" -eq 0 ] && chgrp www-data "$run/llmproxy.sock" "$run/admin.sock"
    apache=$(command -v apache2 || echo /usr/sbin/apache2)
    "$apache" -t -f "$conf" 2>&1 | grep -v "Syntax OK" >&2 || true
    echo "llmproxy: serving through Apache on http://$bind:$port (admin page:" \
         "http://$bind:$port/admin; state in $state); Ctrl-C stops" >&2
    "$apache" -f "$conf" -DFOREGROUND &
    pids="$pids $!"
    wait $!
    exit $?
fi

[ "${LLMPROXY_CONFIG_ONLY:-0}" = 1 ] && exit 0

lighttpd=$(command -v lighttpd || echo /usr/sbin/lighttpd)
"$lighttpd" -tt -f "$conf" >/dev/null
echo "llmproxy: serving on http://$bind:$port (admin page: http://$bind:$port/admin;" \
     "state in $state); Ctrl-C stops" >&2
exec "$lighttpd" -D -f "$conf"
