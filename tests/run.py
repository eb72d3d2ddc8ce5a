#!/usr/bin/env python3
"""Runs every test: the unit tests (TAP programs), then the end-to-end suite
through a real lighttpd. Ends with the line "N passed, M failed"."""

import glob
import json
import signal
import os
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

passed = 0
failed = 0
failures = []


def report(ok, name, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok      %s" % name, flush=True)
    else:
        failed += 1
        failures.append(name)
        print("FAILED  %s" % name, flush=True)
        if detail:
            print("        " + detail.replace("\n", "\n        "), flush=True)


def run_unit():
    bins = sorted(glob.glob(os.path.join(ROOT, "build", "asan", "test_*")))
    bins = [b for b in bins if os.access(b, os.X_OK) and not b.endswith((".o", ".d"))]
    if not bins:
        report(False, "unit tests built", "no unit test programs in build/asan")
    for b in bins:
        name = os.path.basename(b)
        p = subprocess.run([b], capture_output=True, text=True, errors="replace", cwd=ROOT, timeout=300)
        seen = 0
        for line in p.stdout.splitlines():
            if line.startswith("ok ") or line.startswith("not ok "):
                seen += 1
                report(line.startswith("ok "), "%s: %s" % (name, line.split(" - ", 1)[-1]))
        if p.returncode != 0 or seen == 0:
            report(False, "%s exits cleanly" % name,
                   "exit %d\n%s" % (p.returncode, (p.stderr or "")[-3000:]))


def run_valgrind():
    """The unit tests, built without sanitizers, are valgrind-clean with no leaks."""
    import shutil
    if shutil.which("valgrind") is None:
        report(False, "valgrind installed", "scripts/deps.sh test installs it")
        return
    bins = sorted(glob.glob(os.path.join(ROOT, "build", "valgrind", "test_*")))
    bins = [b for b in bins if os.access(b, os.X_OK) and not b.endswith((".o", ".d"))]
    if not bins:
        report(False, "valgrind: unit tests built", "no programs in build/valgrind")
    env = dict(os.environ, LLMPROXY_TEST_QUICK="1")
    for b in bins:
        name = os.path.basename(b)
        p = subprocess.run(["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
                            "--errors-for-leak-kinds=definite,indirect,possible",
                            "--show-leak-kinds=definite,indirect,possible", b],
                           capture_output=True, text=True, errors="replace", cwd=ROOT, env=env, timeout=600)
        report(p.returncode == 0, "valgrind: %s clean, no leaks" % name,
               "exit %d\n%s" % (p.returncode, p.stderr[-3000:]))


def run_fuzz_briefly():
    """Each libFuzzer harness for a few seconds from its seeds (make fuzz runs them long)."""
    for name in ("request", "config", "retry_after", "sse", "fcgi", "multipart"):
        fz = os.path.join(ROOT, "build", "fuzz", "fuzz_" + name)
        if not os.access(fz, os.X_OK):
            report(False, "fuzz: %s built" % name, "build/fuzz/fuzz_%s missing" % name)
            continue
        seeds = os.path.join(ROOT, "tests", "fuzz", "corpus", name)
        # new finds go to the first directory: never into the committed seeds
        work = os.path.join(ROOT, "build", "fuzz", "ci-corpus-" + name)
        os.makedirs(work, exist_ok=True)
        p = subprocess.run([fz, "-max_total_time=5", "-max_len=65536", work, seeds],
                           capture_output=True, text=True, errors="replace", cwd=os.path.join(ROOT, "build", "fuzz"),
                           timeout=120)
        report(p.returncode == 0, "fuzz: %s for 5 s without a finding" % name, p.stderr[-3000:])


def run_install():
    """make install DESTDIR=... then make uninstall leaves nothing behind."""
    import tempfile
    dest = tempfile.mkdtemp(prefix="llmproxy-install-")
    p = subprocess.run(["make", "-s", "--no-print-directory", "install", "DESTDIR=" + dest,
                        "PREFIX=/usr"], capture_output=True, text=True, errors="replace", cwd=ROOT)
    want = ["usr/lib/llmproxy/llmproxy.fcgi", "usr/lib/llmproxy/llmproxy-admin.fcgi",
            "usr/share/llmproxy/htdocs/admin.html",
            "usr/share/llmproxy/etc/apache/llmproxy-proxy-fcgi.conf",
            "usr/share/llmproxy/etc/apache/llmproxy-fcgid.conf",
            "usr/share/llmproxy/etc/apache/htaccess",
            "usr/share/llmproxy/etc/lighttpd/15-llmproxy.conf",
            "usr/lib/systemd/system/llmproxy.service",
            "usr/lib/systemd/system/llmproxy-admin.service"]
    missing = [w for w in want if not os.path.isfile(os.path.join(dest, w))]
    unit = os.path.join(dest, "usr/lib/systemd/system/llmproxy.service")
    paths_ok = os.path.isfile(unit) and "/usr/lib/llmproxy/llmproxy.fcgi" in open(unit).read()
    report(p.returncode == 0 and not missing and paths_ok,
           "make install PREFIX=/usr DESTDIR=...", "%s\nmissing: %s" % (p.stderr[-2000:], missing))
    p = subprocess.run(["make", "-s", "--no-print-directory", "uninstall", "DESTDIR=" + dest,
                        "PREFIX=/usr"], capture_output=True, text=True, errors="replace", cwd=ROOT)
    left = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs]
    report(p.returncode == 0 and not left, "make uninstall removes every file", str(left))


def run_dist():
    """make dist, then make dist-test: the shared-hosting tarball built on Debian 11 and
    served from fresh Debian 11 and 13 chroots that have only apache2 and libcurl4."""
    if os.getuid() != 0:
        print("skip    dist: needs root (debootstrap, chroot)", flush=True)
        return
    t0 = time.time()
    try:
        p = subprocess.run(["make", "-s", "--no-print-directory", "dist"], capture_output=True,
                           text=True, errors="replace", cwd=ROOT, timeout=900,
                           start_new_session=True)
    except subprocess.TimeoutExpired as e:
        report(False, "dist: make dist within 15 minutes", str(e)[-2000:])
        return
    line = (p.stdout.strip().splitlines() or [""])[-1]
    report(p.returncode == 0, "dist: make dist (%s)" % line.replace("make dist: ", "")[-120:],
           (p.stdout + p.stderr)[-3000:])
    if p.returncode != 0:
        return
    # its own session: a timeout stops the whole of it (the script cleans up on SIGTERM)
    proc = subprocess.Popen(["make", "-s", "--no-print-directory", "dist-test"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", cwd=ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate()
    p = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    seen = 0
    for l in p.stdout.splitlines():
        if l.startswith(("PASS ", "FAIL ")):
            seen += 1
            report(l.startswith("PASS "), "dist: " + l[5:])
    if p.returncode != 0 or seen == 0:
        report(False, "dist: make dist-test exits cleanly (%.0fs)" % (time.time() - t0),
               (p.stdout + p.stderr)[-3000:])


def run_format():
    """The C sources follow .clang-format (STYLE.md: CI checks it)."""
    import shutil
    cf = shutil.which("clang-format")
    if cf is None:
        print("skip    clang-format not installed", flush=True)
        return
    files = sorted(glob.glob(os.path.join(ROOT, "fcgi", "*.[ch]")) +
                   glob.glob(os.path.join(ROOT, "tests", "unit", "*.[ch]")) +
                   glob.glob(os.path.join(ROOT, "tests", "bench", "*.c")))
    p = subprocess.run([cf, "--dry-run", "-Werror"] + files, capture_output=True, text=True)
    report(p.returncode == 0, "C sources are clang-formatted (make format)", p.stderr[-2000:])


def run_e2e(server_name):
    from fake_upstream import FakeUpstream
    from harness import E2E_ENV, Apache, Lighttpd
    import test_proxy
    import test_admin  # noqa: F401  (registers its tests)
    import test_resilience  # noqa: F401
    import test_cgi  # noqa: F401
    import test_hosted  # noqa: F401
    import test_peers  # noqa: F401
    import test_real_world  # noqa: F401
    import test_fastcgi  # noqa: F401
    import test_access  # noqa: F401
    import test_keys  # noqa: F401
    import test_metrics  # noqa: F401
    import test_sdk  # noqa: F401
    import test_api  # noqa: F401
    import test_api_more  # noqa: F401

    cls = Apache if server_name == "apache" else Lighttpd
    tag = "e2e[%s]" % server_name
    up = FakeUpstream().start()
    binary = os.path.join(ROOT, "build", "asan", "llmproxy.fcgi")
    srv = cls(binary, procs=2, env=dict(E2E_ENV))
    try:
        srv.start({})
    except Exception as e:  # noqa: BLE001
        report(False, "%s: server starts" % tag, str(e))
        up.stop()
        return
    test_proxy.Env.server = srv
    test_proxy.Env.server_class = cls
    test_proxy.Env.up = up
    only = os.environ.get("E2E_ONLY")  # substrings of test names, by commas
    try:
        for fn in test_proxy.TESTS:
            if server_name not in fn.servers or (only and not any(
                    o in fn.__name__ for o in only.split(","))):
                continue
            t0 = time.time()
            try:
                fn()
                report(True, "%s: %s (%.2fs)" % (tag, fn.__name__, time.time() - t0))
            except Exception:  # noqa: BLE001
                report(False, "%s: %s" % (tag, fn.__name__), traceback.format_exc()[-3000:])
        if server_name == "lighttpd" and (not only or only in "browser_admin"):
            run_browser(srv, up)
    finally:
        srv.stop()
        up.stop()
    bad = up.violations()
    report(not bad, "%s: every upstream request was well-formed HTTP (strict parser)" % tag,
           json.dumps(bad[:5], indent=1)[-3000:])
    reports = srv.sanitizer_reports()
    report(not reports, "%s: no sanitizer reports from the programs" % tag,
           "\n".join(reports)[-5000:])
    if failed:
        print("        (state and log kept in %s)" % srv.state)


def seed_usage(srv):
    """Puts hourly usage rows on two past days into the instance's usage.db, as
    the programs write them, so the Usage chart has known bars: day 1 1000
    tokens of seed-alpha, day 2 3000 of seed-alpha stacked on 1000 of seed-beta."""
    import sqlite3
    # a request (even refused) is recorded, and its process's writer makes
    # usage.db with its tables within a second
    from harness import chat
    chat(srv.port, "seed/no-such-model")
    path = os.path.join(srv.state, "usage.db")
    deadline = time.time() + 10
    while True:
        try:
            with sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5) as ro:
                if ro.execute("SELECT name FROM sqlite_master WHERE name = 'hourly'").fetchone():
                    break
        except sqlite3.Error:
            pass
        if time.time() > deadline:
            raise RuntimeError("usage.db has no table hourly after 10 s")
        time.sleep(0.1)
    today = int(time.time() // 86400)
    d1, d2 = today - 5, today - 3
    rows = [(d1 * 24 + 10, "seed-a", "seed-alpha", 600, 400, 500000),
            (d2 * 24 + 9, "seed-a", "seed-alpha", 2000, 1000, 1500000),
            (d2 * 24 + 15, "seed-b", "seed-beta", 500, 500, 250000)]
    db = sqlite3.connect(os.path.join(srv.state, "usage.db"), timeout=10)
    with db:
        for hour, kid, name, prompt, completion, cost in rows:
            db.execute("INSERT OR REPLACE INTO hourly VALUES(?,?,?,?,?,1,0,?,?,0,?)",
                       (hour, kid, name, "seed/model", "seed-backend", prompt, completion, cost))
    db.close()
    day = lambda d: time.strftime("%Y-%m-%d", time.gmtime(d * 86400))  # noqa: E731
    return {"from": day(today - 6), "to": day(today - 1)}


def run_browser(srv, up):
    """The admin page in headless Chromium (tests/e2e/browser_admin.mjs, TAP)."""
    script = os.path.join(ROOT, "tests", "e2e", "browser_admin.mjs")
    with open(os.path.join(srv.state, "admin.token")) as f:
        token = f.read().strip()
    env = dict(os.environ)
    try:
        env["SEED_USAGE"] = json.dumps(seed_usage(srv))
    except Exception as e:  # noqa: BLE001
        report(False, "browser: usage rows for the chart are seeded", str(e))
    t0 = time.time()
    try:
        p = subprocess.run(["node", script, str(srv.port), token, up.url("name=browser"), srv.state],
                           capture_output=True, text=True, errors="replace", timeout=180,
                           cwd=os.path.join(ROOT, "tests", "e2e"), env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        report(False, "browser: admin page in Chromium", str(e))
        return
    seen = 0
    for line in p.stdout.splitlines():
        if line.startswith("ok ") or line.startswith("not ok "):
            seen += 1
            report(line.startswith("ok "), "browser: " + line.split(" - ", 1)[-1])
    if p.returncode != 0 or seen == 0:
        report(False, "browser: test exits cleanly (%.1fs)" % (time.time() - t0),
               (p.stderr or p.stdout)[-3000:])


def run_redis():
    """Two hosts (lighttpd and Apache) sharing their state through one Redis
    (tests/e2e/test_redis.py)."""
    import test_redis
    try:
        test_redis.run(report)
    except Exception:  # noqa: BLE001
        report(False, "redis: the shared-state suite runs", traceback.format_exc()[-3000:])


def main():
    import signal
    # a runner stopped from outside still stops the servers it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    unit_only = "--unit-only" in sys.argv
    e2e_only = "--e2e-only" in sys.argv
    t0 = time.time()
    if not e2e_only:
        run_format()
        run_unit()
        run_valgrind()
        run_fuzz_briefly()
        run_install()
    if not unit_only:
        if "--no-dist" not in sys.argv and os.environ.get("LLMPROXY_TEST_DIST", "1") != "0":
            run_dist()
        for server in os.environ.get("E2E_SERVERS", "lighttpd apache").split():
            run_e2e(server)
        only = os.environ.get("E2E_ONLY")
        if not only or "redis" in only:
            run_redis()
    print("")
    if failures:
        print("failed: " + ", ".join(failures))
    print("took %.1fs" % (time.time() - t0))
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
