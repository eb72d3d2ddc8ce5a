#!/usr/bin/env python3
"""Checks an unpacked shared-hosting tarball served by an Apache on PORT, from
outside: chat, an unbuffered stream, a failover, the admin page in Chromium,
client keys with a limit, usage.
usage: check_dist.py NAME PORT ACCOUNT_HOME   (run by scripts/dist_test.sh)"""

import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from fake_upstream import FakeUpstream  # noqa: E402
from harness import backend, chat, fetch, request, write_routing  # noqa: E402

name, port, home = sys.argv[1], int(sys.argv[2]), sys.argv[3]
state = os.path.join(home, "llmproxy-state")
failed = 0


def ok(cond, what, detail=""):
    global failed
    print("%s %s: %s%s" % ("PASS" if cond else "FAIL", name, what,
                           "" if cond or not detail else " (%s)" % detail), flush=True)
    failed += 0 if cond else 1


up = FakeUpstream().start()
try:
    st = os.stat(home)
    write_routing(os.path.join(state, "dynamic_routing.json"), {
        "m": {"Strategy": "Failover", "Backends": [backend("bad", up.url("name=bad+status=502")),
                                                 backend("good", up.url("name=good"))]},
        "s": {"Strategy": "Failover", "Backends": [backend("a", up.url("name=s+chunks=4+gap=300"))]}})
    os.chown(os.path.join(state, "dynamic_routing.json"), st.st_uid, st.st_gid)
    s, _, b = request(port, "GET", "/health")
    ok(s == 200 and json.loads(b) == {"Status": "Healthy"}, "GET /health", "%s %r" % (s, b[:100]))
    r = chat(port, "m")
    ok(r.status == 200 and r.json().get("backend") == "good", "chat with a failover",
       "%s %r" % (r.status, r.body[:200]))
    r = chat(port, "s", stream=True)
    lat = [t - float(m.group(1)) for t, d in r.chunks for m in re.finditer(rb'"t": ([0-9.]+)', d)]
    ok(r.status == 200 and r.events()[-1] == "[DONE]" and len(lat) == 4 and max(lat) < 0.1,
       "stream arrives unbuffered", "latencies %s" % lat)
    s, h, b = request(port, "GET", "/admin")
    ok(s == 200 and "frame-ancestors 'none'" in h.get("content-security-policy", [""])[0],
       "admin page with its CSP", str(s))
    ok(fetch(port, "GET", "/admin/config", None, {"Authorization": "Bearer x"}).status == 401,
       "admin API refuses a wrong token")
    tok_file = os.path.join(state, "admin.token")
    ok(os.path.exists(tok_file) and os.stat(tok_file).st_uid == st.st_uid and
       (os.stat(tok_file).st_mode & 0o777) == 0o600, "the first visit made admin.token (0600, the account's)")
    tok = open(tok_file).read().strip()
    shots = os.path.join(ROOT, "build", "dist", "shots-" + name)
    os.makedirs(shots, exist_ok=True)
    p = subprocess.run(["node", os.path.join(ROOT, "tests", "e2e", "browser_admin.mjs"), str(port), tok,
                        up.url("name=browser"), shots], capture_output=True, text=True, timeout=180,
                       cwd=os.path.join(ROOT, "tests", "e2e"))
    lines = [l for l in p.stdout.splitlines() if l.startswith(("ok ", "not ok "))]
    bad = [l for l in lines if l.startswith("not ok")]
    ok(p.returncode == 0 and lines and not bad, "admin page in Chromium: sign in, edit, save (%d checks)"
       % len(lines), "; ".join(bad)[:500] or p.stderr[-500:])
    # client keys: limits and usage kept by the CGI processes (SQLite compiled in)
    auth = {"Authorization": "Bearer " + tok}
    r = fetch(port, "POST", "/admin/keys", {"Name": "dist", "Rpm": 2}, auth)
    ok(r.status == 201 and r.json().get("Key", "").startswith("sk-llmp-"), "a client key is made",
       "%s %r" % (r.status, r.body[:200]))
    key = r.json().get("Key", "") if r.status == 201 else ""
    ok(chat(port, "m").status == 401, "with a key made, a request without one is refused")
    codes = [chat(port, "m", headers={"Authorization": "Bearer " + key}).status for _ in range(3)]
    ok(codes == [200, 200, 429], "Rpm 2 holds across CGI processes", str(codes))
    rows = []
    for _ in range(20):
        rows = fetch(port, "GET", "/admin/usage?group_by=key", None, auth).json().get("Usage", [])
        if [x for x in rows if x.get("Key") == "dist" and x.get("Requests") == 2]:
            break
        time.sleep(0.1)
    ok([x for x in rows if x.get("Key") == "dist" and x.get("Requests") == 2], "usage shows them", str(rows))
    db = os.path.join(state, "usage.db")
    ok(os.path.exists(db) and os.stat(db).st_uid == st.st_uid and (os.stat(db).st_mode & 0o777) == 0o600,
       "usage.db is the account's, 0600")
    if r.status == 201:
        fetch(port, "DELETE", "/admin/keys/" + r.json()["Id"], None, auth)
finally:
    up.stop()
sys.exit(1 if failed else 0)
