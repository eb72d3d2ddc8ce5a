#!/bin/sh
# Installs the Debian packages llmproxy needs, when they are missing.
# usage: scripts/deps.sh build|test|bench
set -eu
what=${1:-build}
need=""
have_header() { [ -f "/usr/include/$1" ] || [ -f "/usr/include/x86_64-linux-gnu/$1" ] || \
                [ -f "/usr/include/$(uname -m)-linux-gnu/$1" ]; }
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

have_cmd cc || need="$need gcc"
have_cmd make || need="$need make"
have_header curl/curl.h || need="$need libcurl4-openssl-dev"
have_header cjson/cJSON.h || need="$need libcjson-dev"
have_header sqlite3.h || need="$need libsqlite3-dev"
have_header hiredis/hiredis.h || need="$need libhiredis-dev"
have_cmd lighttpd || need="$need lighttpd"
if [ "$what" = test ] || [ "${LLMPROXY_SERVER:-lighttpd}" = apache ]; then
    have_cmd apache2 || need="$need apache2"
    [ -f /usr/lib/apache2/modules/mod_fcgid.so ] || need="$need libapache2-mod-fcgid"
fi
case "$what" in
test|bench)
    have_cmd python3 || need="$need python3"
    have_cmd curl || need="$need curl"
    have_cmd ip || need="$need iproute2"
    # the shared-state tests and bench start their own Redis
    have_cmd redis-server || need="$need redis-server"
    ;;
esac
if [ "$what" = test ]; then
    # the admin page's browser test: Debian's chromium driven by playwright-core
    have_cmd chromium || need="$need chromium"
    have_cmd node || need="$need nodejs"
    have_cmd npm || need="$need npm"
    # promtool checks /metrics; a real Prometheus scrapes it
    have_cmd promtool || need="$need prometheus"
    have_cmd clang-format || need="$need clang-format"
    have_cmd valgrind || need="$need valgrind"
    have_cmd clang || need="$need clang"
    # clang alone lacks the libFuzzer and sanitizer runtimes
    ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 ||
        need="$need libclang-rt-14-dev"
fi
if [ "$what" = bench ]; then
    have_cmd wrk || need="$need wrk"
    have_cmd h2load || need="$need nghttp2-client"
    # the peer gateway measured beside llmproxy (Portkey, from npm)
    have_cmd node || need="$need nodejs"
    have_cmd npm || need="$need npm"
fi

npm_deps() {
    if [ "$what" = bench ]; then
        dir="$(cd "$(dirname "$0")/.." && pwd)/tests/bench/portkey"
        [ -d "$dir/node_modules/@portkey-ai/gateway" ] && return 0
        echo "llmproxy: installing the Portkey gateway (npm) to measure beside llmproxy" >&2
        # a bench without the registry still runs: it says it skips the peer
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
            echo "llmproxy: npm ci failed in $dir: make bench will skip the Portkey peer" >&2
        return 0
    fi
    [ "$what" = test ] || return 0
    dir="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e"
    # playwright-core for the browser test, openai (the Node SDK) for tests/e2e/test_sdk.py
    [ -d "$dir/node_modules/playwright-core" ] && [ -d "$dir/node_modules/openai" ] &&
        [ -d "$dir/node_modules/@anthropic-ai/sdk" ] && [ -d "$dir/node_modules/@anthropic-ai/claude-code" ] &&
        return 0
    echo "llmproxy: installing playwright-core, openai, @anthropic-ai/sdk and claude-code (npm) for the browser and SDK tests" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

if [ -z "$need" ]; then
    npm_deps
    exit 0
fi
echo "llmproxy: installing missing packages:$need" >&2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "llmproxy: please install as root: apt-get install$need" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
npm_deps
