#!/bin/sh
# make dist-test: the shared-hosting tarball where it will run. For each of
# Debian 11 and 13 (DIST_TEST_SUITES) a fresh minbase chroot gets only apache2
# and libcurl4 (no compiler, no -dev package); the tarball is laid out as its
# INSTALL says, in the home of an unprivileged account that Apache's workers
# run as; then, from outside, tests/dist/check_dist.py checks a chat, a stream
# (unbuffered), a failover and the admin page in Chromium. Needs root.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
suites=${DIST_TEST_SUITES:-"bullseye trixie"}
tarball=$(ls -t "$root"/build/dist/llmproxy-*.tar.gz 2>/dev/null | head -1)
[ -n "$tarball" ] || { echo "make dist-test: run make dist first" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "make dist-test: needs root (debootstrap, chroot)" >&2; exit 1; }
"$root/scripts/deps.sh" test
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
status=0
for suite in $suites; do
    base="/var/tmp/llmproxy-disttest-$suite"
    if [ ! -f "$base/.llmproxy-ready" ]; then
        echo "dist-test: making a $suite chroot with apache2 and libcurl4 (once)" >&2
        rm -rf "$base"
        debootstrap --variant=minbase "$suite" "$base" "$mirror" >/dev/null
        cp /etc/resolv.conf "$base/etc/resolv.conf"
        chroot "$base" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends apache2 libcurl4 >/dev/null'
        touch "$base/.llmproxy-ready"
    fi
    # each run on a copy, so the cached chroot stays fresh
    r=$(mktemp -d "/var/tmp/llmproxy-disttest-run-XXXXXX")
    cleanup() {
        set +e
        if [ -f "$r/run/apache2-test/apache.pid" ]; then
            kill "$(cat "$r/run/apache2-test/apache.pid")" 2>/dev/null
            sleep 1
        fi
        umount -l "$r/proc" 2>/dev/null
        umount -l "$r/dev" 2>/dev/null
        rm -rf --one-file-system "$r"
    }
    trap cleanup EXIT
    trap 'cleanup; exit 1' INT TERM HUP
    cp -a "$base/." "$r/"
    mount --bind /proc "$r/proc"
    mount --bind /dev "$r/dev"
    if chroot "$r" sh -c 'command -v cc gcc >/dev/null'; then
        echo "dist-test: $suite has a compiler: not a fair test" >&2
        exit 1
    fi
    chroot "$r" sh -c 'useradd --create-home --shell /bin/sh acct && chmod 0700 /home/acct'
    # the INSTALL steps, as the account would do them with a file manager
    tar -xzf "$tarball" -C "$r/tmp"
    pkg=$(ls -d "$r"/tmp/llmproxy-*/ | head -1)
    home="$r/home/acct"
    cp -a "$pkg/llmproxy-state" "$home/"
    mkdir -p "$home/public_html/cgi-bin"
    cp -a "$pkg/cgi-bin/." "$home/public_html/cgi-bin/"
    sed "s|/home/you/llmproxy-state|/home/acct/llmproxy-state|" "$pkg/public_html/.htaccess" \
        > "$home/public_html/.htaccess"
    chroot "$r" chown -R acct:acct /home/acct
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$r/run/apache2-test"
    cat > "$r/etc/llmproxy-test.conf" <<EOF
ServerRoot "/etc/apache2"
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so
LoadModule rewrite_module /usr/lib/apache2/modules/mod_rewrite.so
LoadModule env_module /usr/lib/apache2/modules/mod_env.so
LoadModule cgid_module /usr/lib/apache2/modules/mod_cgid.so
ScriptSock /run/apache2-test/cgid.sock
User acct
Group acct
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile /run/apache2-test/apache.pid
Mutex posixsem default
ErrorLog /run/apache2-test/error.log
LogLevel warn
TypesConfig /etc/mime.types
DocumentRoot /home/acct/public_html
<Directory /home/acct/public_html>
    AllowOverride All
    Require all granted
</Directory>
EOF
    chroot "$r" /usr/sbin/apache2 -f /etc/llmproxy-test.conf -k start
    glibc=$(chroot "$r" sh -c 'ldd --version 2>/dev/null | head -1' || true)
    echo "dist-test: $suite ($glibc), Apache on 127.0.0.1:$port, workers as acct" >&2
    if ! python3 "$root/tests/dist/check_dist.py" "$suite" "$port" "$home"; then
        status=1
        tail -20 "$r/run/apache2-test/error.log" >&2 || true
    fi
    cleanup
    trap - EXIT INT TERM HUP
done
exit $status
