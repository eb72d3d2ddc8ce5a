#!/usr/bin/env python3
"""make bench: llmproxy behind lighttpd against the same upstream reached directly
and through lighttpd's own mod_proxy, measured side by side in one run.

Variants are alternated round by round so machine noise hits all alike. The
upstream is tests/bench/fastupstream (C, epoll); wrk is the load generator.
Both are measured on their own ("direct") in the same run: when direct
throughput is well above the proxied one, neither is the bottleneck.

Held streams: N slow streams open at once (20 events 1 s apart each),
1,000 and 5,000 over HTTP/1.0 (tests/bench/streamload, which checks every
stream for status 200 and [DONE]) and 10,000 over HTTP/2 (h2load, 8 streams
per connection: with HTTP/1 the web server needs two fds per stream and this
machine allows 20,000). The peak of concurrent streams is counted by the
upstream, and the RSS of lighttpd and both programs is sampled at that peak.

usage: scripts/bench.py [--rounds N] [--seconds S] [--streams N] [--hold 1000,5000,10000]
       scripts/bench.py --only-metrics | --only-cgi | --only-open | --only-peer | --only-redis
       | --only-stream | --only-hold | --only-instructions [--requests N]

At the end it prints every figure of the run again as one table, with the
commit measured.
"""

import argparse
import json
import os
import shutil
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from harness import free_port, write_routing  # noqa: E402

BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "Say hello."}],
                   "max_tokens": 16})

WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
""" % BODY


# every figure of the run, printed again at the end as one table
SUMMARY = []


def note(figure, value, target=""):
    SUMMARY.append((figure, value, target))


def commit_id():
    def git(*a):
        return subprocess.run(["git", "-C", ROOT] + list(a), capture_output=True,
                              text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + ("+uncommitted changes" if dirty else "")


def print_summary():
    if not SUMMARY:
        return
    print("\n## make bench summary: commit %s, %s, %s, %d cores\n"
          % (commit_id(), time.strftime("%Y-%m-%d"), cpu_name(), os.cpu_count()))
    print("| figure | measured | target |")
    print("|---|---|---|")
    for figure, value, target in SUMMARY:
        print("| %s | %s | %s |" % (figure, value, target))


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d did not open" % port)


def start(cmd, env=None, log=None, cwd=None):
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True, cwd=cwd)


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def to_ms(v):
    m = re.match(r"([0-9.]+)(us|ms|s)", v)
    x = float(m.group(1))
    return {"us": x / 1000, "ms": x, "s": x * 1000}[m.group(2)]


def wrk_summary(out):
    """Requests, requests/s and client-visible errors (non-2xx/3xx, socket errors) of a wrk run."""
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return requests, rps, errors


def wrk(url, conns, seconds, script):
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency",
                          "-s", script, url], capture_output=True, text=True).stdout
    _, rps, errors = wrk_summary(out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    return {"rps": rps, "p50": to_ms(lat["50"]), "p99": to_ms(lat["99"]), "errors": errors}


class StreamClient:
    """One keep-alive HTTP/1.1 connection (as an SDK keeps), streaming requests on it."""

    def __init__(self, port, path, headers=""):
        self.port, self.path, self.headers = port, path, headers
        self.sock = None

    def once(self, model):
        """One streaming request; returns (ttfb ms, [per-chunk delay ms])."""
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = json.dumps({"model": model, "stream": True, "messages": []}).encode()
        req = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               "%sContent-Length: %d\r\n\r\n" % (self.path, self.headers, len(body))).encode() + body
        t0 = time.time()
        self.sock.sendall(req)
        ttfb = None
        delays = []
        buf = b""
        while True:
            d = self.sock.recv(65536)
            now = time.time()
            if not d:
                self.sock.close()
                self.sock = None
                break
            buf += d
            for m in re.finditer(rb'"t":(\d+)', d):
                if ttfb is None:
                    ttfb = (now - t0) * 1000
                delays.append((now - int(m.group(1)) / 1e6) * 1000)
            if b"[DONE]" in buf and buf.endswith(b"0\r\n\r\n"):
                break  # the last chunk of a chunked answer
        return ttfb, delays


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--hold", default="1000,5000,10000",
                    help="held-stream counts; 0 skips that part")
    ap.add_argument("--only-hold", action="store_true")
    ap.add_argument("--only-cgi", action="store_true")
    ap.add_argument("--only-stream", action="store_true")
    ap.add_argument("--only-metrics", action="store_true")
    ap.add_argument("--only-open", action="store_true",
                    help="only the open-loop latency (fixed rates, tests/bench/openload.c)")
    ap.add_argument("--max-rps", type=float, default=None,
                    help="open loop: take this as llmproxy's plain maximum instead of measuring it "
                         "(the same rates for two builds compared)")
    ap.add_argument("--max-streams", type=float, default=None,
                    help="open loop: the same for streams")
    ap.add_argument("--only-peer", action="store_true",
                    help="only the peer gateway (Portkey, from npm) against llmproxy")
    ap.add_argument("--only-redis", action="store_true",
                    help="only the shared-state (Redis) against local-state comparison")
    ap.add_argument("--only-instructions", action="store_true",
                    help="only the instructions per request of one responder (valgrind "
                         "--tool=callgrind; exact where timings are noisy, for A/B of builds "
                         "with LLMPROXY_BIN)")
    ap.add_argument("--requests", type=int, default=1500,
                    help="--only-instructions: requests counted (each round)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="llmproxy-bench-")
    script = os.path.join(work, "post.lua")
    with open(script, "w") as f:
        f.write(WRK_LUA)
    up_port = free_port()
    procs = []
    try:
        procs.append(start([os.path.join(ROOT, "build", "bench", "fastupstream"), str(up_port)]))
        wait_port(up_port)

        # llmproxy behind lighttpd, as `make run` serves it
        lp_port = free_port()
        state = os.path.join(work, "state")
        os.makedirs(state)
        write_routing(os.path.join(state, "dynamic_routing.json"), {
            "bench": {"Strategy": "Failover", "Backends": [{
                "Name": "fast", "BaseUrl": "http://127.0.0.1:%d/v1" % up_port, "ApiKeys": ["k"]}]},
            "bench-stream": {"Strategy": "Failover", "Backends": [{
                "Name": "fast", "BaseUrl": "http://127.0.0.1:%d/stream/10/20/v1" % up_port,
                "ApiKeys": ["k"]}]},
            "bench-quick-stream": {"Strategy": "Failover", "Backends": [{
                "Name": "fast", "BaseUrl": "http://127.0.0.1:%d/stream/3/1/v1" % up_port,
                "ApiKeys": ["k"]}]},
            "hold": {"Strategy": "Failover", "Backends": [{
                "Name": "held", "BaseUrl": "http://127.0.0.1:%d/stream/20/1000/v1" % up_port,
                "ApiKeys": ["k"]}]}})
        env = dict(os.environ, LLMPROXY_PORT=str(lp_port), LLMPROXY_STATE_DIR=state)
        lp_log = os.path.join(work, "llmproxy.log")
        procs.append(start([os.path.join(ROOT, "scripts", "run.sh")], env, lp_log))
        wait_port(lp_port)

        # a second llmproxy whose clients need a key: one with every check on (a
        # model list, Rpm and Tpm buckets, a budget), against the keyless first
        kp_port = free_port()
        kstate = os.path.join(work, "state-keyed")
        os.makedirs(kstate)
        write_routing(os.path.join(kstate, "dynamic_routing.json"), {
            "bench": {"Strategy": "Failover", "Backends": [{
                "Name": "fast", "BaseUrl": "http://127.0.0.1:%d/v1" % up_port, "ApiKeys": ["k"],
                "InputCostPerMTok": 1, "OutputCostPerMTok": 2}]}})
        kenv = dict(os.environ, LLMPROXY_PORT=str(kp_port), LLMPROXY_STATE_DIR=kstate)
        client_key = subprocess.run(
            [os.path.join(ROOT, "cgi-bin", "llmproxy-admin.fcgi"), "--add-key", "bench",
             "--models", "bench", "--rpm", "1000000000", "--tpm", "1000000000",
             "--budget-usd", "1000000000", "--period", "month"],
            env=kenv, capture_output=True, text=True, check=True).stdout.strip()
        keyed_script = os.path.join(work, "post-keyed.lua")
        with open(keyed_script, "w") as f:
            f.write(WRK_LUA + 'wrk.headers["Authorization"] = "Bearer %s"\n' % client_key)
        procs.append(start([os.path.join(ROOT, "scripts", "run.sh")], kenv,
                           os.path.join(work, "llmproxy-keyed.log")))
        wait_port(kp_port)

        # the same keyed llmproxy with its state in Redis (several hosts as
        # one): a Redis of our own on a unix socket, the same key and routing
        rp_port = free_port()
        rstate = os.path.join(work, "state-redis")
        os.makedirs(rstate)
        for name in ("dynamic_routing.json", "client_keys.json"):
            shutil.copy(os.path.join(kstate, name), os.path.join(rstate, name))
        rsock = os.path.join(work, "redis.sock")
        procs.append(start(["redis-server", "--port", "0", "--unixsocket", rsock,
                            "--unixsocketperm", "700", "--save", "", "--appendonly", "no"],
                           log=os.path.join(work, "redis.log")))
        wait_redis(rsock)
        renv = dict(os.environ, LLMPROXY_PORT=str(rp_port), LLMPROXY_STATE_DIR=rstate,
                    LLMPROXY_REDIS_URL="unix://" + rsock)
        procs.append(start([os.path.join(ROOT, "scripts", "run.sh")], renv,
                           os.path.join(work, "llmproxy-redis.log")))
        wait_port(rp_port)

        # the least a FastCGI gateway can do (tests/bench/fcgi_floor.c), spawned by
        # lighttpd in llmproxy's place, as `make run` serves it: the open loop's
        # floor for any gateway behind lighttpd's FastCGI. One request at a time
        # per process, so enough of them for the requests that overlap.
        fp_port = free_port()
        fstate = os.path.join(work, "state-floor")
        os.makedirs(fstate)
        shutil.copy(os.path.join(state, "dynamic_routing.json"), fstate)
        fenv = dict(os.environ, LLMPROXY_PORT=str(fp_port), LLMPROXY_STATE_DIR=fstate,
                    LLMPROXY_BIN=os.path.join(ROOT, "build", "bench", "fcgi_floor"),
                    LLMPROXY_PROCS="32")
        procs.append(start([os.path.join(ROOT, "scripts", "run.sh")], fenv,
                           os.path.join(work, "floor.log")))
        wait_port(fp_port)

        # lighttpd's own mod_proxy to the same upstream: the floor for any proxy behind it
        mp_port = free_port()
        conf = os.path.join(work, "modproxy.conf")
        with open(conf, "w") as f:
            f.write('server.modules += ("mod_proxy")\nserver.bind = "127.0.0.1"\n'
                    'server.port = %d\nserver.document-root = "%s"\n'
                    'server.stream-response-body = 1\nserver.max-fds = 16384\n'
                    'proxy.server = ("/" => (("host" => "127.0.0.1", "port" => %d)))\n'
                    % (mp_port, work, up_port))
        procs.append(start(["lighttpd", "-D", "-f", conf]))
        wait_port(mp_port)
        time.sleep(0.5)

        if args.only_hold:
            held_streams(args, lp_port, up_port, state, lp_log, work)
            return
        if args.only_cgi:
            cgi_rate(up_port, script)
            return
        if args.only_metrics:
            metrics_cost(up_port, work)
            return
        if args.only_redis:
            redis_cost(args, up_port, kp_port, rp_port, keyed_script, rsock)
            return
        if args.only_open:
            open_loop(args, up_port, lp_port, mp_port, fp_port, script, args.max_rps)
            return
        if args.only_peer:
            portkey_peer(args, up_port, lp_port, state, script, work)
            return
        if args.only_instructions:
            instructions(args, state, script, work)
            return
        if not args.only_stream:
            variants = {
                "direct": "http://127.0.0.1:%d/v1/chat/completions" % up_port,
                "llmproxy": "http://127.0.0.1:%d/v1/chat/completions" % lp_port,
                "llmp+key": "http://127.0.0.1:%d/v1/chat/completions" % kp_port,
                "mod_proxy": "http://127.0.0.1:%d/v1/chat/completions" % mp_port,
            }
            scripts = {v: keyed_script if v == "llmp+key" else script for v in variants}
            for v, url in variants.items():  # warm up connections and caches
                wrk(url, 32, 1, scripts[v])
            res = {(v, c): [] for v in variants for c in (1, 32)}
            reuse = {"llmproxy": [0, 0], "mod_proxy": [0, 0]}  # connections opened, requests
            for r in range(args.rounds):
                order = list(variants) if r % 2 == 0 else list(reversed(list(variants)))
                for c in (1, 32):
                    for v in order:
                        before = upstream_stats(up_port)
                        res[(v, c)].append(wrk(variants[v], c, args.seconds, scripts[v]))
                        after = upstream_stats(up_port)
                        if v in reuse:
                            reuse[v][0] += after["accepted"] - before["accepted"]
                            reuse[v][1] += after["requests"] - before["requests"]
                print("round %d/%d done" % (r + 1, args.rounds), file=sys.stderr)

            def med(v, c, k):
                return statistics.median(x[k] for x in res[(v, c)])

            print("\nNon-streaming chat completion (%d rounds x %d s, wrk -t1, medians)"
                  % (args.rounds, args.seconds))
            print("%-10s %5s %10s %9s %9s %7s" % ("variant", "conns", "req/s", "p50 ms", "p99 ms",
                                                   "errors"))
            for c in (1, 32):
                for v in variants:
                    print("%-10s %5d %10.0f %9.3f %9.3f %7d" % (
                        v, c, med(v, c, "rps"), med(v, c, "p50"), med(v, c, "p99"),
                        sum(x["errors"] for x in res[(v, c)])))
            print("")
            for c in (1, 32):
                print("conns %2d: llmproxy/mod_proxy throughput %.2f; added latency over direct "
                      "p50 %+.3f ms, p99 %+.3f ms; mod_proxy adds p50 %+.3f ms" % (
                          c, med("llmproxy", c, "rps") / med("mod_proxy", c, "rps"),
                          med("llmproxy", c, "p50") - med("direct", c, "p50"),
                          med("llmproxy", c, "p99") - med("direct", c, "p99"),
                          med("mod_proxy", c, "p50") - med("direct", c, "p50")))

            for c in (1, 32):
                note("throughput at %d connection%s, closed loop (llmproxy / mod_proxy / direct)"
                     % (c, "s" if c > 1 else ""), "%.0f / %.0f / %.0f req/s" % (
                         med("llmproxy", c, "rps"), med("mod_proxy", c, "rps"),
                         med("direct", c, "rps")))
            note("added p50 at 1 connection, closed loop (llmproxy / mod_proxy)",
                 "%+.3f / %+.3f ms" % (med("llmproxy", 1, "p50") - med("direct", 1, "p50"),
                                       med("mod_proxy", 1, "p50") - med("direct", 1, "p50")))
            note("client key (model list, Rpm, Tpm, budget) against keyless, throughput at 32",
                 "%.3f (%.0f req/s)" % (med("llmp+key", 32, "rps") / med("llmproxy", 32, "rps"),
                                       med("llmp+key", 32, "rps")))
            note("client key, added p50 at 1 connection",
                 "%+.1f us" % (1000 * (med("llmp+key", 1, "p50") - med("llmproxy", 1, "p50"))))
            print("client key (model list, Rpm, Tpm, budget) vs keyless: throughput at 32 conns "
                  "%.3f; added p50 at 1 conn %+.1f us, at 32 conns %+.1f us" % (
                      med("llmp+key", 32, "rps") / med("llmproxy", 32, "rps"),
                      1000 * (med("llmp+key", 1, "p50") - med("llmproxy", 1, "p50")),
                      1000 * (med("llmp+key", 32, "p50") - med("llmproxy", 32, "p50"))))
            kerr = sum(x["errors"] for c in (1, 32) for x in res[("llmp+key", c)])
            if kerr:
                print("WARNING: %d non-2xx answers with the client key" % kerr)

            max_rps = med("llmproxy", 32, "rps")
            for v, (conns, reqs) in reuse.items():
                print("%s opened %d upstream connections for %d requests (%.2f per 1000)" % (
                    v, conns, reqs, 1000.0 * conns / max(reqs, 1)))

        # streaming: alternate direct and proxied requests one by one
        names = ("direct", "llmproxy", "mod_proxy")
        ttfb = {v: [] for v in names}
        delay = {v: [] for v in names}
        clients = {"direct": StreamClient(up_port, "/stream/10/20/v1/chat/completions"),
                   "llmproxy": StreamClient(lp_port, "/v1/chat/completions"),
                   "mod_proxy": StreamClient(mp_port, "/stream/10/20/v1/chat/completions")}
        for i in range(args.streams):
            for v in (names if i % 2 == 0 else tuple(reversed(names))):
                t, d = clients[v].once("bench-stream")
                ttfb[v].append(t)
                delay[v].extend(d[1:])  # the first chunk's delay is the TTFB story
        print("\nStreaming (%d streams each over keep-alive connections, 10 chunks 20 ms apart, "
              "alternated)" % args.streams)
        for v in names:
            print("%-10s TTFB p50 %.3f ms p99 %.3f ms; chunk delay p50 %.3f ms p99 %.3f ms" % (
                v, pct(ttfb[v], 50), pct(ttfb[v], 99), pct(delay[v], 50), pct(delay[v], 99)))
        print("added by llmproxy: TTFB p50 %+.3f ms p99 %+.3f ms; chunk delay p50 %+.3f ms "
              "p99 %+.3f ms" % (
                  pct(ttfb["llmproxy"], 50) - pct(ttfb["direct"], 50),
                  pct(ttfb["llmproxy"], 99) - pct(ttfb["direct"], 99),
                  pct(delay["llmproxy"], 50) - pct(delay["direct"], 50),
                  pct(delay["llmproxy"], 99) - pct(delay["direct"], 99)))
        note("stream time to first byte added, p50 (llmproxy / mod_proxy)", "%+.3f / %+.3f ms" % (
            pct(ttfb["llmproxy"], 50) - pct(ttfb["direct"], 50),
            pct(ttfb["mod_proxy"], 50) - pct(ttfb["direct"], 50)), "no worse than mod_proxy")
        note("stream chunk delay added, p50 (llmproxy / mod_proxy)", "%+.3f / %+.3f ms" % (
            pct(delay["llmproxy"], 50) - pct(delay["direct"], 50),
            pct(delay["mod_proxy"], 50) - pct(delay["direct"], 50)))
        print("added by mod_proxy: TTFB p50 %+.3f ms; chunk delay p50 %+.3f ms p99 %+.3f ms" % (
            pct(ttfb["mod_proxy"], 50) - pct(ttfb["direct"], 50),
            pct(delay["mod_proxy"], 50) - pct(delay["direct"], 50),
            pct(delay["mod_proxy"], 99) - pct(delay["direct"], 99)))
        if args.only_stream:
            return
        open_loop(args, up_port, lp_port, mp_port, fp_port, script, max_rps)
        portkey_peer(args, up_port, lp_port, state, script, work)
        held_streams(args, lp_port, up_port, state, lp_log, work)
        cgi_rate(up_port, script)
        cost = subprocess.run([os.path.join(ROOT, "build", "bench", "snapshot_cost")],
                              capture_output=True, text=True).stdout
        for line in cost.splitlines():
            if line.startswith("#"):
                how = "notices" if "notices on" in line else "stat"
                print("\nhot-reload check (change counter + %s), -O2:%s" % (
                    "inotify, as served" if how == "notices" else "stat() of each file, as CGI",
                    line[1:].split(":", 1)[1]))
                note("hot-reload check per request" + (" (stat, CGI)" if how == "stat" else ""),
                     line[1:].split(":", 1)[1].strip())
        metrics_cost(up_port, work)
        redis_cost(args, up_port, kp_port, rp_port, keyed_script, rsock)
        print("\nmachine: %s, %d cores" % (cpu_name(), os.cpu_count()))
    finally:
        for p in reversed(procs):
            stop(p)
        print_summary()


def openload(port, path, model, rate, seconds, stream=False):
    cmd = [os.path.join(ROOT, "build", "bench", "openload"), str(port), path, model,
           "%.0f" % rate, str(seconds)] + (["stream"] if stream else [])
    out = subprocess.run(cmd, capture_output=True, text=True).stdout.split()
    d = dict(zip(out[0::2], out[1::2]))
    return {k: float(v) for k, v in d.items()}


def open_loop(args, up_port, lp_port, mp_port, fp_port, script, max_rps):
    """Latency at fixed rates (25%, 50% and 80% of llmproxy's measured maximum), the
    same rate against direct, llmproxy, mod_proxy and (plain only) the FastCGI
    floor (tests/bench/fcgi_floor.c), alternated; plain answers timed to their
    last byte, streams to their first body byte."""
    url = "http://127.0.0.1:%d/v1/chat/completions" % lp_port
    if max_rps is None:
        wrk(url, 32, 1, script)
        max_rps = statistics.median(wrk(url, 32, args.seconds, script)["rps"] for _ in range(3))
    # streams have their own maximum (each lasts as long as the backend's
    # events take): measured the same way, with wrk, streaming
    stream_script = script + "-stream.lua"
    with open(stream_script, "w") as f:
        f.write(WRK_LUA.replace(BODY, json.dumps(
            {"model": "bench-quick-stream", "stream": True, "messages": []})))
    max_streams = args.max_streams
    if max_streams is None:
        wrk(url, 32, 1, stream_script)
        max_streams = statistics.median(
            wrk(url, 32, args.seconds, stream_script)["rps"] for _ in range(3))
    targets = {"direct": (up_port, "/v1/chat/completions", "/stream/3/1/v1/chat/completions"),
               "llmproxy": (lp_port, "/v1/chat/completions", "/v1/chat/completions"),
               "mod_proxy": (mp_port, "/v1/chat/completions", "/stream/3/1/v1/chat/completions"),
               "floor": (fp_port, "/v1/chat/completions", "/v1/chat/completions")}
    # The floor is timed for plain requests only: its streams measured 9 to 14 ms
    # to the first byte at 25% load (about the length of a whole stream) and
    # queued past that, so they would say nothing about the hop.
    print("\nOpen loop (tests/bench/openload.c: requests at a fixed rate, timed from when each "
          "was due; llmproxy's maximum at 32 connections %.0f req/s plain, %.0f streams/s of 3 "
          "events 1 ms apart; %d rounds x %d s, medians, microseconds)"
          % (max_rps, max_streams, args.rounds, args.seconds))
    out = {}
    for kind in ("plain", "stream"):
        for share in (0.25, 0.5, 0.8):
            rate = (max_streams if kind == "stream" else max_rps) * share
            res = {v: [] for v in targets}
            for r in range(args.rounds):
                order = list(targets) if r % 2 == 0 else list(reversed(list(targets)))
                for v in order:
                    port, plain_path, stream_path = targets[v]
                    stream = kind == "stream"
                    if stream and v == "floor":
                        continue  # see above
                    model = "bench-quick-stream" if stream else "bench"
                    res[v].append(openload(port, stream_path if stream else plain_path, model,
                                           rate, args.seconds, stream))

            def med(v, k):
                return statistics.median(x.get(k, 0) for x in res[v])

            for v in [t for t in targets if res[t]]:
                print("  %-6s %3d%% (%6.0f/s) %-9s p50 %6.0f p99 %6.0f p99.9 %7.0f  errors %d" % (
                    kind, share * 100, rate, v, med(v, "p50"), med(v, "p99"), med(v, "p999"),
                    sum(x.get("errors", 0) for x in res[v])))
            for v in [t for t in ("llmproxy", "mod_proxy", "floor") if res[t]]:
                added = [(med(v, k) - med("direct", k)) / 1000 for k in ("p50", "p99", "p999")]
                out[(kind, share, v)] = added
                note("open loop, %s, %d%% (%.0f/s): %s adds p50 / p99 / p99.9"
                     % (kind, share * 100, rate, v), "%+.3f / %+.3f / %+.3f ms" % tuple(added),
                     "p50 <= +0.15, p99 <= +1 ms" if share == 0.5 and v == "llmproxy" else "")
                print("  %-6s %3d%%: %s adds p50 %+.3f ms, p99 %+.3f ms, p99.9 %+.3f ms over direct"
                      % ((kind, share * 100, v) + tuple(added)))
    return max_rps, max_streams, out


PORTKEY = os.path.join(ROOT, "tests", "bench", "portkey")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def portkey_headers(up_port, path):
    """What Portkey needs to reach our backend: the provider and its address."""
    return [("Authorization", "Bearer k"), ("x-portkey-provider", "openai"),
            ("x-portkey-custom-host", "http://127.0.0.1:%d%s/v1" % (up_port, path))]


def portkey_peer(args, up_port, lp_port, state, script, work):
    """The Portkey gateway (npm, Node.js) against llmproxy behind lighttpd, the
    same backend, measured alternately: throughput at 32 connections, added
    latency at 1, stream time to first byte, memory per open stream."""
    if not os.path.isdir(os.path.join(PORTKEY, "node_modules", "@portkey-ai", "gateway")):
        print("\nPortkey peer: skipped (tests/bench/portkey has no node_modules: "
              "scripts/deps.sh bench installs it with npm)")
        return
    with open(os.path.join(PORTKEY, "package.json")) as f:
        version = json.load(f)["dependencies"]["@portkey-ai/gateway"]
    pk_port = free_port()
    pk = start(["node", "start.mjs", str(pk_port)], log=os.path.join(work, "portkey.log"),
               cwd=PORTKEY)
    try:
        wait_port(pk_port, 30)
        pk_script = os.path.join(work, "post-portkey.lua")
        with open(pk_script, "w") as f:
            f.write(WRK_LUA + "".join('wrk.headers["%s"] = "%s"\n' % h
                                      for h in portkey_headers(up_port, "")))
        urls = {"direct": ("http://127.0.0.1:%d/v1/chat/completions" % up_port, script),
                "llmproxy": ("http://127.0.0.1:%d/v1/chat/completions" % lp_port, script),
                "portkey": ("http://127.0.0.1:%d/v1/chat/completions" % pk_port, pk_script)}
        for _ in range(2):  # Node warms up (its first seconds run at half speed)
            wrk(urls["portkey"][0], 32, 3, pk_script)
        res = {(v, c): [] for v in urls for c in (1, 32)}
        for r in range(args.rounds):
            order = list(urls) if r % 2 == 0 else list(reversed(list(urls)))
            for c in (1, 32):
                for v in order:
                    res[(v, c)].append(wrk(urls[v][0], c, args.seconds, urls[v][1]))

        def med(v, c, k):
            return statistics.median(x[k] for x in res[(v, c)])

        # stream time to first byte, one stream after the other, alternated
        quick = "/stream/3/1"
        clients = {"direct": StreamClient(up_port, quick + "/v1/chat/completions"),
                   "llmproxy": StreamClient(lp_port, "/v1/chat/completions"),
                   "portkey": StreamClient(pk_port, "/v1/chat/completions", "".join(
                       "%s: %s\r\n" % h for h in portkey_headers(up_port, quick)))}
        ttfb = {v: [] for v in clients}
        names = list(clients)
        for i in range(args.streams):
            for v in (names if i % 2 == 0 else names[::-1]):
                ttfb[v].append(clients[v].once("bench-quick-stream")[0])

        # memory per open stream: N held streams (20 events 1 s apart) each
        n = 1000
        held = {}
        for v, port, model, hdrs, pid_rss in (
                ("llmproxy", lp_port, "hold", [], lambda: server_rss_kb(state)),
                ("portkey", pk_port, "hold",
                 ["%s: %s" % h for h in portkey_headers(up_port, "/stream/20/1000")],
                 lambda: rss_kb(pk.pid))):
            time.sleep(2)
            idle = pid_rss()
            p = subprocess.Popen([os.path.join(ROOT, "build", "bench", "streamload"), str(port),
                                  str(n), model, "2000"] + hdrs,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            peak, peak_rss = 0, 0
            while p.poll() is None:
                k = upstream_streams(up_port)
                if k >= peak:
                    peak, peak_rss = k, pid_rss()
                time.sleep(0.5)
            m = re.search(r"done ok=(\d+) errors=(\d+)", p.stdout.read())
            held[v] = (peak, (peak_rss - idle) / float(max(peak, 1)), int(m.group(2)) if m else n,
                       peak_rss / 1024.0)

        print("\nPeer gateway: Portkey %s (Node.js %s, one process) against llmproxy behind "
              "lighttpd, same backend, alternated (%d rounds x %d s, medians)" % (
                  version, subprocess.run(["node", "--version"], capture_output=True,
                                          text=True).stdout.strip(), args.rounds, args.seconds))
        print("%-9s %12s %12s %12s %12s %14s %16s" % (
            "variant", "req/s @32", "req/s @1", "p50 @1 ms", "p99 @1 ms", "TTFB p50 ms",
            "added KB/stream"))
        for v in urls:
            h = held.get(v)
            print("%-9s %12.0f %12.0f %12.3f %12.3f %14.3f %16s" % (
                v, med(v, 32, "rps"), med(v, 1, "rps"), med(v, 1, "p50"), med(v, 1, "p99"),
                pct(ttfb[v], 50), "%.1f (%d open, %d errors)" % (h[1], h[0], h[2]) if h else "-"))
        errors = sum(x["errors"] for v in urls for c in (1, 32) for x in res[(v, c)])
        if errors:
            print("WARNING: %d non-2xx answers or socket errors" % errors)
        ratio = med("llmproxy", 32, "rps") / med("portkey", 32, "rps")
        print("llmproxy / Portkey: throughput at 32 connections %.1fx; added p50 at 1 connection "
              "%+.3f against %+.3f ms; stream TTFB added %+.3f against %+.3f ms; memory per open "
              "stream %.1f against %.1f KB" % (
                  ratio, med("llmproxy", 1, "p50") - med("direct", 1, "p50"),
                  med("portkey", 1, "p50") - med("direct", 1, "p50"),
                  pct(ttfb["llmproxy"], 50) - pct(ttfb["direct"], 50),
                  pct(ttfb["portkey"], 50) - pct(ttfb["direct"], 50),
                  held["llmproxy"][1], held["portkey"][1]))
        note("Portkey %s: throughput at 32 connections (llmproxy / Portkey)" % version,
             "%.0f / %.0f req/s: %.1fx" % (med("llmproxy", 32, "rps"), med("portkey", 32, "rps"),
                                           ratio))
        note("Portkey: added p50 at 1 connection (llmproxy / Portkey)", "%+.3f / %+.3f ms" % (
            med("llmproxy", 1, "p50") - med("direct", 1, "p50"),
            med("portkey", 1, "p50") - med("direct", 1, "p50")))
        note("Portkey: stream time to first byte added (llmproxy / Portkey)",
             "%+.3f / %+.3f ms" % (pct(ttfb["llmproxy"], 50) - pct(ttfb["direct"], 50),
                                   pct(ttfb["portkey"], 50) - pct(ttfb["direct"], 50)))
        note("Portkey: memory per open stream, %d held (llmproxy / Portkey)" % n,
             "%.1f / %.1f KB" % (held["llmproxy"][1], held["portkey"][1]))
    finally:
        stop(pk)


def wait_redis(sock, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        out = subprocess.run(["redis-cli", "-s", sock, "PING"], capture_output=True, text=True)
        if out.stdout.strip() == "PONG":
            return
        time.sleep(0.05)
    raise RuntimeError("redis-server did not come up on %s" % sock)


def redis_cost(args, up_port, kp_port, rp_port, keyed_script, rsock):
    """The keyed llmproxy with its state in Redis against the same one with
    local state (the mmap'd file): alternated rounds, medians."""
    variants = {"local": "http://127.0.0.1:%d/v1/chat/completions" % kp_port,
                "redis": "http://127.0.0.1:%d/v1/chat/completions" % rp_port}
    for url in variants.values():
        wrk(url, 32, 1, keyed_script)
    res = {(v, c): [] for v in variants for c in (1, 32)}
    cmds0 = redis_commands(rsock)
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(list(variants)))
        for c in (1, 32):
            for v in order:
                res[(v, c)].append(wrk(variants[v], c, args.seconds, keyed_script))
    cmds1 = redis_commands(rsock)
    reqs = sum(x["rps"] * args.seconds for x in res[("redis", 1)] + res[("redis", 32)])

    def med(v, c, k):
        return statistics.median(x[k] for x in res[(v, c)])

    print("\nShared state in Redis (unix socket) vs local state, client key with Rpm, Tpm and "
          "a budget (%d rounds x %d s, medians)" % (args.rounds, args.seconds))
    for c in (1, 32):
        for v in variants:
            print("%-6s conns %2d: %8.0f req/s p50 %.3f ms p99 %.3f ms errors %d" % (
                v, c, med(v, c, "rps"), med(v, c, "p50"), med(v, c, "p99"),
                sum(x["errors"] for x in res[(v, c)])))
    note("Redis shared state against local, throughput at 32 connections",
         "%.3f (%.0f req/s)" % (med("redis", 32, "rps") / med("local", 32, "rps"),
                                med("redis", 32, "rps")))
    note("Redis shared state, added p50 at 1 connection",
         "%+.3f ms" % (med("redis", 1, "p50") - med("local", 1, "p50")), "<= +0.1 ms")
    print("redis vs local: throughput at 32 conns %.3f; added p50 at 1 conn %+.3f ms "
          "(target <= +0.1 ms), at 32 conns %+.3f ms" % (
              med("redis", 32, "rps") / med("local", 32, "rps"),
              med("redis", 1, "p50") - med("local", 1, "p50"),
              med("redis", 32, "p50") - med("local", 32, "p50")))
    if reqs > 0:
        print("redis commands per request: %.2f (scripts count as one; %d commands, ~%d requests)"
              % ((cmds1 - cmds0) / reqs, cmds1 - cmds0, reqs))


def redis_commands(sock):
    out = subprocess.run(["redis-cli", "-s", sock, "INFO", "stats"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    return 0


def metrics_cost(up_port, work):
    """Recording a request's metrics (-O2, on a state file), and a scrape of
    /metrics with 100 models x 3 backends x 3 keys, through lighttpd."""
    out = subprocess.run([os.path.join(ROOT, "build", "bench", "metrics_cost")],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("#"):
            print("\nmetrics: " + line[2:])
            note("metrics: recording one request", line.rsplit(":", 1)[1].strip())
    from harness import fetch
    state = os.path.join(work, "state-metrics")
    os.makedirs(state)
    models = {}
    for i in range(100):
        models["model-%03d" % i] = {"Strategy": "RoundRobin", "Backends": [
            {"Name": "backend-%d" % j, "BaseUrl": "http://127.0.0.1:%d/v1" % up_port,
             "ApiKeys": ["k%d-%d-%d" % (i, j, k) for k in range(3)]} for j in range(3)]}
    write_routing(os.path.join(state, "dynamic_routing.json"), models)
    port = free_port()
    token = "bench-metrics-token"
    env = dict(os.environ, LLMPROXY_PORT=str(port), LLMPROXY_STATE_DIR=state,
               LLMPROXY_ADMIN_TOKEN=token)
    p = start([os.path.join(ROOT, "scripts", "run.sh")], env, os.path.join(work, "metrics.log"))
    try:
        wait_port(port)
        body = '{"model":"%s","messages":[{"role":"user","content":"hi"}]}'
        for i in range(900):  # every model, backend and key answers: every series exists
            fetch(port, "POST", "/v1/chat/completions", body % ("model-%03d" % (i % 100)),
                  {"Content-Type": "application/json"})
        times, size, series = [], 0, 0
        for _ in range(25):
            t0 = time.perf_counter()
            r = fetch(port, "GET", "/metrics", None, {"Authorization": "Bearer " + token})
            times.append((time.perf_counter() - t0) * 1000)
            size = len(r.body)
            series = sum(1 for x in r.body.split(b"\n") if x and not x.startswith(b"#"))
        note("metrics: a scrape of 100 models x 3 backends x 3 keys (%d series)" % series,
             "p50 %.1f ms, max %.1f ms" % (pct(times[5:], 50), max(times[5:])), "<= 50 ms")
        print("metrics: a scrape of 100 models x 3 backends x 3 keys (%d series, %d KB): p50 %.1f ms, "
              "max %.1f ms (target <= 50 ms)" % (series, size // 1024, pct(times[5:], 50),
                                                 max(times[5:])))
    finally:
        stop(p)


def cgi_rate(up_port, script):
    """Requests/s of the same binary as plain CGI (a new process per request)."""
    from harness import LighttpdCgi
    srv = LighttpdCgi(os.path.join(ROOT, "cgi-bin", "llmproxy.fcgi"))
    srv.start({"bench": {"Strategy": "Failover", "Backends": [{
        "Name": "fast", "BaseUrl": "http://127.0.0.1:%d/v1" % up_port, "ApiKeys": ["k"]}]}})
    try:
        url = "http://127.0.0.1:%d/v1/chat/completions" % srv.port
        wrk(url, 8, 1, script)
        r = wrk(url, 8, 5, script)
        note("plain CGI under mod_cgi, 8 connections", "%.0f req/s" % r["rps"], ">= 500 req/s")
        print("\nCGI mode (mod_cgi, a process per request, 8 connections): %.0f req/s, p50 %.2f ms, "
              "p99 %.2f ms, %d errors" % (r["rps"], r["p50"], r["p99"], r["errors"]))
    finally:
        srv.stop()
    cgi_floor()


def cpu_ms(cmd, env, runs=200):
    """CPU (user + system) and wall time of one run of cmd, averaged over runs."""
    t0 = os.times()
    w0 = time.perf_counter()
    for _ in range(runs):
        subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    t1 = os.times()
    return ((t1.children_user - t0.children_user + t1.children_system - t0.children_system)
            * 1000 / runs, (time.perf_counter() - w0) * 1000 / runs)


def cgi_floor():
    """Where a CGI start goes: a process that links nothing, one that links libcurl, one that
    also calls curl_global_init, and llmproxy.fcgi answering /health, each run 200 times."""
    state = tempfile.mkdtemp(prefix="llmproxy-cgi-floor-")
    shutil.copy(os.path.join(ROOT, "etc", "dynamic_routing.default.json"),
                os.path.join(state, "dynamic_routing.json"))
    env = dict(os.environ, LLMPROXY_STATE_DIR=state, REQUEST_METHOD="GET", SCRIPT_NAME="/health",
               REQUEST_URI="/health", SERVER_PROTOCOL="HTTP/1.1", GATEWAY_INTERFACE="CGI/1.1",
               REMOTE_ADDR="127.0.0.1", HTTP_HOST="127.0.0.1")
    bench = os.path.join(ROOT, "build", "bench")
    rows = [("a process that links nothing", [os.path.join(bench, "cgi_none")]),
            ("a process that links libcurl", [os.path.join(bench, "cgi_floor")]),
            ("+ curl_global_init", [os.path.join(bench, "cgi_floor"), "init"]),
            ("llmproxy.fcgi, GET /health", [os.path.join(ROOT, "cgi-bin", "llmproxy.fcgi")])]
    print("CGI start, one at a time (200 runs each): CPU and wall ms per run")
    for name, cmd in rows:
        cpu, wall = cpu_ms(cmd, env)
        note("CGI start: " + name, "%.2f ms CPU" % cpu)
        print("  %-32s cpu %.2f ms  wall %.2f ms" % (name, cpu, wall))
    shutil.rmtree(state, ignore_errors=True)


def callgrind_costs(path):
    """The whole count and that of a few functions (inclusive) of one dump."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)", line)
        if m:
            name = m.group(2)
            key = "total" if "PROGRAM TOTALS" in name else name.split(" [")[0].split(":")[-1]
            costs.setdefault(key, int(m.group(1).replace(",", "")))
    return costs


def instructions(args, state, script, work):
    """Instructions per plain request in one responder under callgrind, spawned by
    lighttpd as make run does (a wrapper in LLMPROXY_BIN), at one connection: a
    warm-up, the counters zeroed, N requests, a dump. The usage writer's thread
    is counted apart (its cost depends on how many one-second flushes fall in
    the window). Deterministic where this VM's timings are not."""
    binary = os.environ.get("LLMPROXY_BIN", os.path.join(ROOT, "cgi-bin", "llmproxy.fcgi"))
    wrapper = os.path.join(work, "callgrind.sh")
    out_prefix = os.path.join(work, "callgrind.out")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s.%%p %s\n"
                % (out_prefix, binary))
    os.chmod(wrapper, 0o755)
    ip_port = free_port()
    istate = os.path.join(work, "state-callgrind")
    os.makedirs(istate)
    shutil.copy(os.path.join(state, "dynamic_routing.json"), istate)
    env = dict(os.environ, LLMPROXY_PORT=str(ip_port), LLMPROXY_STATE_DIR=istate,
               LLMPROXY_BIN=wrapper, LLMPROXY_PROCS="1")
    server = start([os.path.join(ROOT, "scripts", "run.sh")], env, os.path.join(work, "cg.log"))
    try:
        wait_port(ip_port, 60)
        url = "http://127.0.0.1:%d/v1/chat/completions" % ip_port
        pid = None
        for _ in range(100):
            ps = subprocess.run(["pgrep", "-f", "callgrind-out-file=" + out_prefix],
                                capture_output=True, text=True).stdout.split()
            if ps:
                pid = ps[0]
                break
            time.sleep(0.1)

        def control(flag):
            # the responder takes the command when it next runs: a request wakes it
            poke = subprocess.Popen(["sh", "-c", "sleep 1; curl -s -o /dev/null "
                                     "http://127.0.0.1:%d/health" % ip_port])
            subprocess.run(["callgrind_control", flag, pid], capture_output=True)
            poke.wait()

        body = BODY.encode()
        req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
               % (ip_port, len(body), body))
        print("\nInstructions per plain request, one responder under callgrind (%s), "
              "%d requests at 1 connection, 2 rounds" % (binary, args.requests))
        per = []
        for r in range(2):
            wrk(url, 1, 2, script)
            control("-z")
            sock = None
            for _ in range(args.requests):
                while True:
                    if sock is None:
                        sock = socket.create_connection(("127.0.0.1", ip_port))
                    sock.sendall(req)
                    buf = b""
                    while b"\r\n\r\n" not in buf:
                        d = sock.recv(65536)
                        if not d:
                            break
                        buf += d
                    if b"\r\n\r\n" in buf:
                        break
                    sock.close()  # lighttpd ended the kept connection: again on a new one
                    sock = None
                head, rest = buf.split(b"\r\n\r\n", 1)
                clen = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                while len(rest) < clen:
                    rest += sock.recv(65536)
            sock.close()
            control("-d")
            dumps = sorted((f for f in os.listdir(work) if f.startswith("callgrind.out.")),
                           key=lambda f: os.path.getmtime(os.path.join(work, f)))
            c = callgrind_costs(os.path.join(work, dumps[-1]))
            n = args.requests
            writer = c.get("writer", 0)
            per.append((c["total"] - writer) / n)
            print("  round %d: %.0f instructions per request without the usage writer "
                  "(writer %.0f; reading the usage %.0f, FastCGI variables %.0f)" % (
                      r + 1, (c["total"] - writer) / n, writer / n,
                      c.get("meter_usage_json", 0) / n, c.get("fcgi_param", 0) / n))
        note("instructions per plain request, one responder (callgrind, without the writer)",
             "%.1fk / %.1fk" % (per[0] / 1000, per[1] / 1000))
    finally:
        stop(server)


def upstream_stats(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /_stats HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"}" not in data:
        data += s.recv(4096)
    s.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def server_rss_kb(state):
    """RSS of lighttpd and its children (the responders and the admin program)."""
    with open(os.path.join(state, "lighttpd.pid")) as f:
        pid = int(f.read())
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total = 0
    for p in [pid] + [int(k) for k in kids]:
        with open("/proc/%d/status" % p) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def upstream_streams(up_port):
    """Streams the upstream is sending right now (idle kept-alive connections not counted)."""
    return upstream_stats(up_port)["streams"]


def held_streams(args, lp_port, up_port, state, lp_log, work):
    counts = [int(x) for x in args.hold.split(",") if int(x) > 0]
    if not counts:
        return
    body = os.path.join(work, "hold.json")
    with open(body, "w") as f:
        json.dump({"model": "hold", "stream": True,
                   "messages": [{"role": "user", "content": "hold"}]}, f)
    print("\nHeld streams (each 20 events 1 s apart)")
    print("%-7s %6s %9s %7s %8s %10s %12s %11s" % ("streams", "proto", "peak open", "errors",
                                                   "RSS MB", "KB/stream", "idle RSS MB",
                                                   "added KB/s"))
    for n in counts:
        time.sleep(2)
        idle = server_rss_kb(state)
        with open(lp_log) as f:
            log_mark = len(f.read())
        if n <= 5000:
            proto = "http/1"
            cmd = [os.path.join(ROOT, "build", "bench", "streamload"), str(lp_port), str(n), "hold",
                   "2000"]
        else:
            proto = "h2"
            cmd = ["h2load", "-n", str(n), "-c", str(n // 8), "-m", "8", "-d", body,
                   "-H", "content-type: application/json",
                   "http://127.0.0.1:%d/v1/chat/completions" % lp_port]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak, peak_rss = 0, 0
        while p.poll() is None:
            k = upstream_streams(up_port)
            if k >= peak:
                peak, peak_rss = k, server_rss_kb(state)
            time.sleep(0.5)
        out = p.stdout.read()
        if proto == "http/1":
            m = re.search(r"done ok=(\d+) errors=(\d+)", out)
            errors = int(m.group(2)) if m else n
        else:
            m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
            errors = n - int(m.group(1)) if m else n
        with open(lp_log) as f:
            log = f.read()[log_mark:]
        # every stream must also have ended well on the proxy's side
        good = len(re.findall(r"model=hold stream=1 attempts=\[held#0:200:[^]]*\] status=200", log))
        errors = max(errors, n - good)
        note("%d held streams (%s): errors, RSS per open stream" % (n, proto),
             "%d errors, %.1f KB" % (errors, peak_rss / float(max(peak, 1))))
        print("%-7d %6s %9d %7d %8.1f %10.1f %12.1f %11.1f" % (
            n, proto, peak, errors, peak_rss / 1024.0, peak_rss / float(max(peak, 1)),
            idle / 1024.0, (peak_rss - idle) / float(max(peak, 1))))
    print("(KB/stream: the whole RSS of lighttpd, both responders and the admin program at the "
          "peak, divided by the open streams; added: the same over the RSS just before)")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown cpu"


if __name__ == "__main__":
    main()
