#!/bin/sh
# make dist: build/dist/llmproxy-VERSION-linux-x86_64.tar.gz, the upload for a
# shared host where nothing can be installed. The programs are built inside a
# Debian 11 (bullseye) chroot, so they need only glibc 2.31 or newer; cJSON
# (from Debian's source package), SQLite (bullseye-security's static
# library) and hiredis (static) are compiled in, libcurl.so.4 (on practically every host) is
# linked dynamically. Needs root and a Debian mirror.
#   DIST_SUITE   the Debian release to build on (bullseye)
#   DIST_CACHE   where the build chroot is kept between runs
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
suite=${DIST_SUITE:-bullseye}
cache=${DIST_CACHE:-/var/tmp/llmproxy-dist-$suite}
out="$root/build/dist"
version=$(sed -n 's/^#define LLMPROXY_VERSION "\(.*\)"/\1/p' "$root/fcgi/common.h")
name="llmproxy-$version-linux-$(uname -m)"

[ "$(id -u)" -eq 0 ] || { echo "make dist: needs root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

if [ ! -f "$cache/.llmproxy-ready" ]; then
    echo "make dist: making a $suite build chroot in $cache (once)" >&2
    rm -rf "$cache"
    debootstrap --variant=minbase "$suite" "$cache" "$mirror" >/dev/null
    cp /etc/resolv.conf "$cache/etc/resolv.conf"
    # the machine's CA bundle, for a mirror behind a TLS proxy
    cp /etc/ssl/certs/ca-certificates.crt "$cache/etc/ssl/certs/" 2>/dev/null || true
    # the source with Debian's security fixes (bullseye-security carries cJSON's)
    echo "deb-src $mirror $suite main" >> "$cache/etc/apt/sources.list"
    echo "deb-src ${mirror%/debian}/debian-security $suite-security main" >> "$cache/etc/apt/sources.list"
    echo "deb ${mirror%/debian}/debian-security $suite-security main" >> "$cache/etc/apt/sources.list"
    chroot "$cache" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends gcc libc6-dev libcurl4-openssl-dev dpkg-dev patch xz-utils >/dev/null'
    # Debian's cJSON source: the upstream tarball and Debian's patches (its
    # security fixes). Some mirrors lack the .dsc, so apt-get source may fail
    # after fetching both; they are unpacked and patched here by hand.
    # (the orig tarball is in the main pool only; the newest Debian patches in
    # the security pool: fetch from both, keep what came)
    chroot "$cache" sh -c "mkdir -p /src/cjson && cd /src/cjson &&
        apt-get source -qq --download-only cjson/$suite >/dev/null 2>&1;
        apt-get source -qq --download-only cjson >/dev/null 2>&1; true"
    chroot "$cache" sh -c ':
        cd /src/cjson && tar xzf cjson_*.orig.tar.gz && deb=$(ls cjson_*.debian.tar.xz | sort -V | tail -1) &&
        dir=$(ls -d cJSON-*/ | head -1) && tar xJf "$deb" -C "$dir" &&
        cd "$dir" && for p in $(grep -v "^#" debian/patches/series); do patch -s -p1 < "debian/patches/$p"; done'
fi
# SQLite, linked statically, with the security fixes (chroots made before it
# was needed get it here)
if ! chroot "$cache" dpkg -s libsqlite3-dev >/dev/null 2>&1; then
    sec="deb ${mirror%/debian}/debian-security $suite-security main"
    grep -qxF "$sec" "$cache/etc/apt/sources.list" || echo "$sec" >> "$cache/etc/apt/sources.list"
    chroot "$cache" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends libsqlite3-dev >/dev/null'
fi
# hiredis (Redis, for several hosts), linked statically too
if ! chroot "$cache" dpkg -s libhiredis-dev >/dev/null 2>&1; then
    chroot "$cache" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends libhiredis-dev >/dev/null'
fi
cjson=$(ls -d "$cache"/src/cjson/cJSON-*/ 2>/dev/null | head -1)
[ -n "$cjson" ] && touch "$cache/.llmproxy-ready"
[ -f "$cjson/cJSON.c" ] || { echo "make dist: no cJSON source in $cache/src/cjson" >&2; exit 1; }

work="$cache/build"
rm -rf "$work"
mkdir -p "$work/include/cjson" "$work/src"
cp "$root"/fcgi/*.c "$root"/fcgi/*.h "$work/src/"
cp "$root/build/gen/admin_page.c" "$root/etc/dist/glibc_compat.c" "$work/src/"
cp "$cjson/cJSON.c" "$work/src/"
cp "$cjson/cJSON.h" "$work/include/cjson/"
cp "$cjson/cJSON.h" "$work/src/"
proxy=$(cd "$root" && make -s --no-print-directory print-PROXY)
admin=$(cd "$root" && make -s --no-print-directory print-ADMIN)
srcs() { for m in "$@"; do printf 'src/%s.c ' "$m"; done; }
# SQLite static; its two calls of newer glibc versions go to the base ones
# (etc/dist/glibc_compat.c)
sqlite="src/glibc_compat.c -Wl,--wrap=fcntl64 -Wl,--wrap=log -Wl,-Bstatic -lsqlite3 -Wl,-Bdynamic -ldl -lpthread -lm"
flags="-std=c17 -O2 -g0 -D_FORTIFY_SOURCE=2 -fstack-protector-strong -Iinclude -Isrc -Wall -Werror"
# shellcheck disable=SC2046
chroot "$cache" sh -c "cd /build && \
    gcc $flags $(srcs $proxy) src/cJSON.c -o llmproxy.fcgi -lcurl -Wl,-Bstatic -lhiredis -Wl,-Bdynamic $sqlite -s && \
    gcc $flags $(srcs $admin) src/cJSON.c -o llmproxy-admin.fcgi $sqlite -s"

# the newest glibc symbol version the programs ask for is their floor
floor=$(objdump -T "$work/llmproxy.fcgi" "$work/llmproxy-admin.fcgi" |
        sed -n 's/.*GLIBC_\([0-9.]*\).*/\1/p' | sort -t. -k1,1n -k2,2n -k3,3n | tail -1)
needed=$(objdump -p "$work/llmproxy.fcgi" | awk '/NEEDED/{print $2}' | tr '\n' ' ')

pkg="$out/$name"
rm -rf "$pkg"
mkdir -p "$pkg/cgi-bin" "$pkg/public_html" "$pkg/llmproxy-state"
install -m 0755 "$work/llmproxy.fcgi" "$work/llmproxy-admin.fcgi" "$pkg/cgi-bin/"
install -m 0644 "$root/etc/apache/cgi-bin.htaccess" "$pkg/cgi-bin/.htaccess"
install -m 0644 "$root/etc/apache/htaccess" "$pkg/public_html/.htaccess"
install -m 0600 "$root/etc/dynamic_routing.default.json" "$pkg/llmproxy-state/dynamic_routing.json"
install -m 0600 "$root/etc/dist/state.htaccess" "$pkg/llmproxy-state/.htaccess"
chmod 0700 "$pkg/llmproxy-state"
sed -e "s/@VERSION@/$version/g" -e "s/@GLIBC@/$floor/g" -e "s/@NEEDED@/$needed/g" \
    "$root/etc/dist/INSTALL.in" > "$pkg/INSTALL"
tar -C "$out" -czf "$out/$name.tar.gz" "$name"
echo "make dist: $out/$name.tar.gz (glibc >= $floor; needs: $needed)"
