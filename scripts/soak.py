#!/usr/bin/env python3
"""Soak test (not part of make test): about 10 minutes of steady load through
lighttpd, streaming and not, while one backend flips between healthy and failing
every few seconds and another stays healthy. Checks: no client-visible error,
no fd growth, flat RSS. Prints start and end figures.

usage: scripts/soak.py [--minutes 10] [--flip 4]
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from fake_upstream import FakeUpstream  # noqa: E402
from harness import Lighttpd, backend  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from bench import wrk_summary  # noqa: E402

WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
function delay() return %d end
"""


def procs_of(srv):
    with open(os.path.join(srv.state, "lighttpd.pid")) as f:
        pid = int(f.read())
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(k) for k in kids]


def sample(srv):
    fds = rss = 0
    for p in procs_of(srv):
        fds += len(os.listdir("/proc/%d/fd" % p))
        with open("/proc/%d/status" % p) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
    return fds, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--flip", type=float, default=4, help="seconds healthy, then failing, ...")
    args = ap.parse_args()
    seconds = int(args.minutes * 60)
    up = FakeUpstream().start()
    srv = Lighttpd(os.path.join(ROOT, "cgi-bin", "llmproxy.fcgi"), procs=2)
    srv.start({"soak": {"Strategy": "Failover", "Backends": [
        backend("flipper", up.url("name=flipper+status=503+flip=%g" % args.flip)),
        backend("steady", up.url("name=steady+chunks=5+gap=20"))]},
        "soak-rr": {"Strategy": "RoundRobin", "Backends": [
            backend("flipper", up.url("name=flipper-rr+status=500+flip=%g" % args.flip)),
            backend("steady", up.url("name=steady-rr+chunks=5+gap=20"))]}})
    work = tempfile.mkdtemp(prefix="llmproxy-soak-")
    url = "http://127.0.0.1:%d/v1/chat/completions" % srv.port
    loads = []
    for name, body, conns, delay in (
            ("plain", {"model": "soak", "messages": [{"role": "user", "content": "hi"}]}, 4, 10),
            ("plain-rr", {"model": "soak-rr", "messages": []}, 2, 10),
            ("stream", {"model": "soak", "stream": True, "messages": []}, 4, 10),
            ("stream-rr", {"model": "soak-rr", "stream": True, "messages": []}, 2, 10)):
        script = os.path.join(work, name + ".lua")
        with open(script, "w") as f:
            f.write(WRK_LUA % (json.dumps(body), delay))
        p = subprocess.Popen(["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "-s", script, url],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        loads.append((name, p))
    time.sleep(5)
    first = sample(srv)
    print("t=%4ds fds=%d rss=%.1f MB" % (5, first[0], first[1] / 1024.0), flush=True)
    samples = [first]
    t0 = time.time()
    while any(p.poll() is None for _, p in loads):
        time.sleep(30)
        if all(p.poll() is not None for _, p in loads):
            break
        s = sample(srv)
        samples.append(s)
        print("t=%4ds fds=%d rss=%.1f MB" % (time.time() - t0 + 5, s[0], s[1] / 1024.0),
              flush=True)
    total = errors = 0
    for name, p in loads:
        n, rate, bad = wrk_summary(p.stdout.read())
        print("%-9s %7d requests %6.1f req/s, %d client-visible errors" % (name, n, rate, bad))
        total += n
        errors += bad
    log = srv.log()
    # streams answered 200 but broken later would only show in the proxy's log
    broken = len(re.findall(r"model=soak\S* stream=1 attempts=\[[^]]*(broken|idle_timeout)", log))
    # (499: wrk stopping at the end with requests in flight)
    failed = len(re.findall(r"model=soak\S* .*status=(5\d\d|4[0-8]\d)", log))
    circuits = log.count("circuit_open")
    last = sample(srv)
    srv.stop()
    up.stop()
    print("start: fds=%d rss=%.1f MB; end: fds=%d rss=%.1f MB" % (
        first[0], first[1] / 1024.0, last[0], last[1] / 1024.0))
    print("%d requests, %d client-visible errors, %d broken streams, %d failed in the log, "
          "%d attempts skipped on an open circuit" % (total, errors, broken, failed, circuits))
    peak = max(s[1] for s in samples[1:] or samples)
    ok = errors == 0 and broken == 0 and failed == 0 and last[0] <= first[0] + 8 and \
        peak <= first[1] * 1.5 + 8192
    print("soak: %s" % ("PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
