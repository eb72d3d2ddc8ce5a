"""Two llmproxy hosts sharing their state through one Redis (LLMPROXY_REDIS_URL).

Host A is lighttpd with 2 responder processes, host B is Apache with 1, each
with its own state dir and port, both started with the same Redis URL, in
front of one fake upstream. Every case sends its requests to both hosts and
fails if a host kept its own counters, cooldowns, circuits, limits, affinity
or configuration:

  round robin and weighted: tickets shared, so the backends alternating hosts
      see is ONE cycle in configuration order (hosts counting their own tickets
      give a period-2 pattern, whatever the totals);
  key rotation: the same, for a backend's keys;
  a 429 on A cools the key on B, a circuit opened on A is open on B;
  a client key's Rpm holds over both hosts together;
  an admin change on A is served by B within 1 s;
  a Responses follow-up sent to B reaches the backend and key that made it on A;
  a client key's token budget and its Tpm hold over both hosts together;
  a CGI host C (lighttpd mod_cgi, a process per request) takes its tickets from
      the same Redis: round robin over A and C is one cycle;
  Redis hung (SIGSTOP): no request waits on it past the timeout, every one is
      answered from local state, and sharing resumes once it is let go;
  Redis SIGKILLed under load: no client sees an error, both hosts log it
      loudly, /metrics says llmproxy_redis_up 0, then 1 after a restart;
  a Redis restarted empty is seeded again, and sharing works after.

Run alone:  cd tests/e2e && python3 test_redis.py   (ends with "N passed, M failed")
(LLMPROXY_E2E_BIN names another llmproxy.fcgi than build/asan's, its admin program beside it.)
tests/run.py runs it after the per-server e2e runs (E2E_ONLY unset or naming "redis")."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback

from fake_upstream import FakeUpstream
from harness import (E2E_ENV, ROOT, Apache, Lighttpd, LighttpdCgi, backend, chat, fetch,
                     write_routing)
from redis_server import RedisServer
from test_proxy import wait_for

BIN = os.environ.get("LLMPROXY_E2E_BIN") or os.path.join(ROOT, "build", "asan", "llmproxy.fcgi")
SYNC_S = 3.0      # a routing or keys change reaches the other host in ~0.5 s: generous
SETTLE_S = 0.3    # a host tells Redis about a 429 or a failure as it happens, not before
                  # its client's answer: a moment before the other host is asked
CHANGE_LIMIT_S = 1.0  # the contract: a change on one host is served by the other within 1 s


class Ctx:
    up = None
    redis = None
    a = None
    b = None
    t_redis_back = None  # when the load case restarted Redis
    env = None           # the hosts' environment (with LLMPROXY_REDIS_URL)

    @property
    def hosts(self):
        return (self.a, self.b)


# ---------------------------------------------------------------- helpers

def served_by(r):
    return r.json()["backend"]


def requests_for(up, prefix):
    return [e for e in up.requests() if e["spec"].startswith(prefix)]


def keys_seen(up, prefix):
    return [e["headers"].get("authorization", "") for e in requests_for(up, prefix)]


def token(srv):
    with open(os.path.join(srv.state, "admin.token")) as f:
        return f.read().strip()


def admin_headers(srv):
    return {"Authorization": "Bearer " + token(srv)}


def bearer(key):
    return {"Authorization": "Bearer " + key}




def served_models(srv, headers=None):
    """The sorted model ids GET /v1/models lists, or its status when not 200."""
    r = fetch(srv.port, "GET", "/v1/models", None, headers, timeout=10)
    if r.status != 200:
        return r.status
    return sorted(m["id"] for m in r.json()["data"])


def wait_serving(ctx, models, timeout=SYNC_S, hosts=None):
    """Waits until every host lists exactly these models (each case uses model
    names of its own, so a host still on the old routing lists others)."""
    want = sorted(models)
    hosts = hosts or ctx.hosts
    last = {}
    deadline = time.time() + timeout
    while True:
        pending = []
        for h in hosts:
            try:
                got = served_models(h)
            except (OSError, ValueError) as e:
                got = repr(e)
            last[h.tag] = got
            if got != want:
                pending.append(h.tag)
        if not pending:
            return
        if time.time() > deadline:
            raise AssertionError("%s do(es) not serve the new routing %.1f s after it was written: "
                                 "want models %s, served %s" % (", ".join(pending), timeout, want, last))
        time.sleep(0.02)


def set_routing(ctx, models, via=None):
    """Writes the routing file of one host (A unless told), as an operator would,
    and waits until both hosts serve it."""
    write_routing((via or ctx.a).routing, models)
    wait_serving(ctx, models)


def model(names, up, strategy="Failover", **kw):
    return {"Strategy": strategy, "Backends": [backend(n, up.url("name=" + n), **kw) for n in names]}


def shown(seq):
    return " ".join("%s:%s" % (t, n) for t, n in seq)


def redis_up_metric(srv):
    """llmproxy_redis_up on srv's /metrics, or a string saying why not."""
    try:
        r = fetch(srv.port, "GET", "/metrics", None, admin_headers(srv), timeout=5)
    except OSError as e:
        return "scrape failed: %r" % e
    if r.status != 200:
        return "scrape answered %d" % r.status
    m = re.search(r"^llmproxy_redis_up (\S+)$", r.body.decode(errors="replace"), re.M)
    if not m:
        return "no llmproxy_redis_up sample"
    return float(m.group(1))


def wait_metric(srv, want, timeout):
    """(seconds it took, last value): polls /metrics for llmproxy_redis_up == want."""
    t0 = time.time()
    last = None
    while True:
        last = redis_up_metric(srv)
        if last == want:
            return time.time() - t0, last
        if time.time() - t0 > timeout:
            return None, last
        time.sleep(0.05)


def metric_value(srv, name):
    """An unlabelled sample of srv's /metrics (a float), or a string saying why not."""
    try:
        r = fetch(srv.port, "GET", "/metrics", None, admin_headers(srv), timeout=5)
    except OSError as e:
        return "scrape failed: %r" % e
    if r.status != 200:
        return "scrape answered %d" % r.status
    m = re.search(r"^%s (\S+)$" % re.escape(name), r.body.decode(errors="replace"), re.M)
    if not m:
        return "no %s sample" % name
    return float(m.group(1))


def rr_break(seq, names):
    """None when seq is one round robin cycle over names in configuration order
    (each request the backend after the one before), else what breaks it."""
    idx = [names.index(n) if n in names else -1 for n in seq]
    bad = [i for i in range(1, len(seq)) if idx[i] < 0 or idx[i] != (idx[i - 1] + 1) % len(names)]
    if idx and idx[0] < 0:
        bad.insert(0, 0)
    return None if not bad else "first break at request %d" % bad[0]


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def error_code(r):
    try:
        return r.json().get("error", {}).get("code")
    except ValueError:
        return None


def with_key(ctx, fields, model_name, body):
    """Makes a client key on A through the admin API (fields: its settings),
    waits until both hosts know it, runs body(key), and deletes it after,
    waiting until both hosts are keyless again (the later cases run keyless)."""
    r = fetch(ctx.a.port, "POST", "/admin/keys", fields, admin_headers(ctx.a))
    assert r.status == 201, (r.status, r.body[:300])
    made = r.json()
    failed = True
    try:
        # a host that has the key (any key) refuses a request without one, and
        # lists the model to a request with this one
        ok = wait_for(lambda: all(served_models(h) == 401 and
                                  served_models(h, bearer(made["Key"])) == [model_name]
                                  for h in ctx.hosts), SYNC_S)
        assert ok, "a key made on A: GET /v1/models without it / with it answered %s %.0f s later" % (
            {h.tag: (served_models(h), served_models(h, bearer(made["Key"]))) for h in ctx.hosts}, SYNC_S)
        note = body(made["Key"])
        failed = False
        return note
    finally:
        r = fetch(ctx.a.port, "DELETE", "/admin/keys/" + made["Id"], None, admin_headers(ctx.a))
        back = r.status == 200 and wait_for(
            lambda: all(served_models(h) == [model_name] for h in ctx.hosts), SYNC_S)
        if not back and not failed:
            raise AssertionError("the key deleted on A (%d): hosts answer %s" % (
                r.status, {h.tag: served_models(h) for h in ctx.hosts}))


def unreachable_lines(text):
    return [l for l in text.splitlines() if "redis" in l.lower() and "unreachable" in l.lower()]


def program_pids(srv):
    """{pid: program} of the llmproxy programs below srv's web server (lighttpd's
    children, or run.sh's for Apache)."""
    if srv.proc is None:
        return {}
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,args="], capture_output=True,
                         text=True).stdout
    kids, args = {}, {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        pid, ppid = int(parts[0]), int(parts[1])
        kids.setdefault(ppid, []).append(pid)
        args[pid] = parts[2]
    found, todo = {}, [srv.proc.pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            todo.append(c)
            prog = os.path.basename(args[c].split()[0])
            if prog in ("llmproxy.fcgi", "llmproxy-admin.fcgi"):
                found[c] = prog
    return found


def process_env(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        raw = f.read()
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def gone(pids):
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
        except FileNotFoundError:
            pass
    return True


def stop_clean(srv):
    """SIGTERM to the host's process group: (None if it stopped within 10 s and left
    no program running, else what went wrong (it is SIGKILLed then), exit status)."""
    if srv.proc is None:
        return "%s was not running" % srv.tag, None
    pids = list(program_pids(srv))
    proc = srv.proc
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    why = None
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        why = "%s still running 10 s after SIGTERM (SIGKILLed)" % srv.tag
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    srv.proc = None
    if not wait_for(lambda: gone(pids), 5):
        left = [p for p in pids if not gone([p])]
        why = (why + "; " if why else "") + "%s left programs running: %s" % (srv.tag, left)
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return why, proc.returncode


# ---------------------------------------------------------------- cases

def routing_rr(up):
    return {"rr3": model(["rr-a", "rr-b", "rr-c"], up, "RoundRobin")}


def case_env(ctx):
    """Not a sharing case: every program of both hosts got LLMPROXY_REDIS_URL."""
    want = ctx.redis.url()
    problems = []
    for h in ctx.hosts:
        progs = program_pids(h)
        names = sorted(progs.values())
        if "llmproxy.fcgi" not in names or "llmproxy-admin.fcgi" not in names:
            problems.append("%s: programs found: %s" % (h.tag, progs))
        for pid, prog in sorted(progs.items()):
            got = process_env(pid).get("LLMPROXY_REDIS_URL")
            if got != want:
                problems.append("%s: %s[%d] has LLMPROXY_REDIS_URL=%r" % (h.tag, prog, pid, got))
    assert not problems, "\n".join(problems)


def case_seeded(ctx):
    """Not a sharing case: the configuration is in Redis once both hosts run."""
    def seeded():
        v = ctx.redis.cli("HGET", "llmproxy:config", "v")
        routing = ctx.redis.cli("HGET", "llmproxy:config", "routing")
        with open(ctx.a.routing) as f:
            return v != "" and routing == f.read().strip()
    ok = wait_for(seeded, SYNC_S)
    assert ok, "llmproxy:config in Redis: %s (keys: %s)" % (
        ctx.redis.cli("HGETALL", "llmproxy:config")[:600], ctx.redis.cli("KEYS", "llmproxy:*")[:400])


def case_round_robin(ctx):
    names = ["rr-a", "rr-b", "rr-c"]
    set_routing(ctx, routing_rr(ctx.up))
    got = []
    for i in range(30):
        h = ctx.hosts[i % 2]
        r = chat(h.port, "rr3")
        assert r.status == 200, (h.tag, i, r.status, r.body[:300])
        got.append((h.tag[0], served_by(r)))
    seq = [n for _, n in got]
    counts = {n: seq.count(n) for n in names}
    assert counts == {n: 10 for n in names}, (counts, shown(got))
    bad = [i for i in range(3, 30) if seq[i] != seq[i - 3]]
    assert not bad and len(set(seq[:3])) == 3, \
        "not a cycle of period 3 across the hosts (request %s breaks it): %s" % (bad[:1], shown(got))
    # a ticket picks backend ticket % 3, in configuration order: consecutive
    # tickets, consecutive backends (two hosts each counting their own can make
    # a period-3 pattern too, but never one in that order)
    idx = [names.index(n) for n in seq]
    bad = [i for i in range(1, 30) if idx[i] != (idx[i - 1] + 1) % 3]
    assert not bad, "not one cycle in configuration order (rr-a, rr-b, rr-c) across the hosts, " \
                    "first break at request %d: %s" % (bad[0], shown(got))


def case_weighted(ctx):
    set_routing(ctx, {"w31": {"Strategy": "Weighted", "Backends": [
        backend("heavy", ctx.up.url("name=w-heavy"), weight=3),
        backend("light", ctx.up.url("name=w-light"), weight=1)]}})
    got = []
    for i in range(40):
        h = ctx.hosts[i % 2]
        r = chat(h.port, "w31")
        assert r.status == 200, (h.tag, i, r.status, r.body[:300])
        got.append((h.tag[0], served_by(r)[2:]))
    seq = [n for _, n in got]
    assert seq.count("heavy") == 30 and seq.count("light") == 10, \
        (seq.count("heavy"), seq.count("light"), shown(got))
    # one shared ticket sequence: the smooth 3:1 schedule (heavy, heavy, light,
    # heavy) repeats every 4 requests whichever host gets them; two hosts with
    # their own schedules, interleaved, never repeat with period 4
    bad = [i for i in range(4, 40) if seq[i] != seq[i - 4]]
    assert not bad, "the 3:1 schedule does not repeat every 4 requests across the hosts " \
                    "(request %d breaks it): %s" % (bad[0], shown(got))


def case_key_rotation(ctx):
    keys = ["kr-1", "kr-2", "kr-3"]
    set_routing(ctx, {"keyrot": {"Strategy": "Failover", "Backends": [
        backend("a", ctx.up.url("name=keyrot"), keys=keys)]}})
    ctx.up.reset()
    hosts = []
    for i in range(30):
        h = ctx.hosts[i % 2]
        r = chat(h.port, "keyrot")
        assert r.status == 200, (h.tag, i, r.status, r.body[:300])
        hosts.append(h.tag[0])
    seen = [k.replace("Bearer ", "") for k in keys_seen(ctx.up, "name=keyrot")]
    assert len(seen) == 30, "the backend got %d requests for 30" % len(seen)
    got = list(zip(hosts, seen))
    counts = {k: seen.count(k) for k in keys}
    assert counts == {k: 10 for k in keys}, (counts, shown(got))
    # the key is counter % 3, in configuration order: one shared counter gives
    # one cycle, two hosts' own counters interleave (kr-1 kr-1 kr-2 kr-2 ...)
    idx = [keys.index(k) for k in seen]
    bad = [i for i in range(1, 30) if idx[i] != (idx[i - 1] + 1) % 3]
    assert not bad, "the keys are not one rotation across the hosts, first break at request %d: %s" % (
        bad[0], shown(got))


def case_cooldown(ctx):
    set_routing(ctx, {"cool": {"Strategy": "Failover", "Backends": [
        backend("a", ctx.up.url("name=cool+status=429+ra=30+onlykey=cool-k1"),
                keys=["cool-k1", "cool-k2"])]}})
    ctx.up.reset()
    for i in range(4):  # rotation reaches cool-k1 within 2 requests
        r = chat(ctx.a.port, "cool")
        assert r.status == 200, ("A", i, r.status, r.body[:300])
        if "Bearer cool-k1" in keys_seen(ctx.up, "name=cool"):
            break
    before = keys_seen(ctx.up, "name=cool")
    assert before.count("Bearer cool-k1") == 1, "on A: %s" % before
    time.sleep(SETTLE_S)
    for i in range(10):
        r = chat(ctx.b.port, "cool")
        assert r.status == 200, ("B", i, r.status, r.body[:300])
    after = keys_seen(ctx.up, "name=cool")[len(before):]
    assert after == ["Bearer cool-k2"] * 10, \
        "B tried %d request(s) with the key A saw 429 on (Retry-After 30): %s" % (
            after.count("Bearer cool-k1"), after)


def case_circuit(ctx):
    set_routing(ctx, {"circ": {"Strategy": "Failover", "Backends": [
        backend("down", ctx.up.url("name=circ-down+status=503")),
        backend("up", ctx.up.url("name=circ-up"))]}})
    ctx.up.reset()
    for i in range(5):
        r = chat(ctx.a.port, "circ")
        assert r.status == 200 and served_by(r) == "circ-up", ("A", i, r.status, r.body[:300])
    downs = requests_for(ctx.up, "name=circ-down")
    assert len(downs) == 3, "A tried the failing backend %d times in 5 requests (3 open its circuit)" % len(downs)
    t_open = downs[-1]["t"]
    mark = len(ctx.b.log())
    time.sleep(SETTLE_S)
    for i in range(10):
        r = chat(ctx.b.port, "circ")
        assert r.status == 200 and served_by(r) == "circ-up", ("B", i, r.status, r.body[:300])
    t_end = time.time()
    total = len(requests_for(ctx.up, "name=circ-down"))
    # the circuit opens for 5 s: past that, one half-open trial is right
    allowed = 3 if t_end - t_open < 5.0 else 4
    assert total <= allowed, "the failing backend was tried %d times in all (%d by B), the circuit " \
                             "A opened %.1f s before was not open on B" % (total, total - 3, t_end - t_open)
    assert wait_for(lambda: "down:circuit_open" in ctx.b.log()[mark:], 2), \
        "B's log does not say down:circuit_open:\n" + ctx.b.log()[mark:][-1500:]


def case_rpm(ctx):
    set_routing(ctx, {"rpm-m": model(["rpm"], ctx.up)})
    r = fetch(ctx.a.port, "POST", "/admin/keys", {"Name": "redis-rpm", "Rpm": 10}, admin_headers(ctx.a))
    assert r.status == 201, (r.status, r.body[:300])
    made = r.json()
    failed = True
    try:
        # a host that has the key (any key) refuses a request without one
        ok = wait_for(lambda: all(served_models(h) == 401 for h in ctx.hosts), SYNC_S)
        assert ok, "a key made on A: GET /v1/models without a key answered %s %.0f s later" % (
            {h.tag: served_models(h) for h in ctx.hosts}, SYNC_S)
        got = []
        for i in range(20):
            h = ctx.hosts[i % 2]
            r = chat(h.port, "rpm-m", headers=bearer(made["Key"]))
            code = r.json().get("error", {}).get("code") if r.status != 200 else None
            got.append((h.tag[0], r.status if code in (None, "rate_limit_exceeded") else
                        "%d/%s" % (r.status, code)))
        statuses = [s for _, s in got]
        assert statuses.count(200) == 10 and statuses.count(429) == 10, \
            "Rpm 10 over both hosts: %d answered 200, %d 429: %s" % (
                statuses.count(200), statuses.count(429), shown(got))
        assert statuses == [200] * 10 + [429] * 10, "not the first 10 admitted: " + shown(got)
        failed = False
    finally:
        # the later cases run keyless
        r = fetch(ctx.a.port, "DELETE", "/admin/keys/" + made["Id"], None, admin_headers(ctx.a))
        back = r.status == 200 and wait_for(
            lambda: all(served_models(h) == ["rpm-m"] for h in ctx.hosts), SYNC_S)
        if not back and not failed:
            raise AssertionError("the key deleted on A (%d): hosts answer %s" % (
                r.status, {h.tag: served_models(h) for h in ctx.hosts}))


def alternate(ctx, key, model, n, refused_code):
    """n requests with key, alternating A and B: (host letter, 200 | 429 when refused with
    refused_code | "status/code" otherwise); each answer must report 50 tokens."""
    got = []
    for i in range(n):
        h = ctx.hosts[i % 2]
        r = chat(h.port, model, headers=bearer(key))
        if r.status == 200:
            used = r.json().get("usage", {}).get("total_tokens")
            assert used == 50, "the answer's usage says %r tokens, the case needs 50: %s" % (
                used, r.body[:300])
            got.append((h.tag[0], 200))
        else:
            code = error_code(r)
            got.append((h.tag[0], r.status if code == refused_code else
                        "%d/%s" % (r.status, code)))
    return got


def case_budget(ctx):
    spec = "name=redis-bud+ptok=30+ctok=20"  # 50 tokens an answer
    set_routing(ctx, {"bud-m": {"Strategy": "Failover", "Backends": [backend("bud", ctx.up.url(spec))]}})
    ctx.up.reset()

    def body(key):
        got = alternate(ctx, key, "bud-m", 8, "insufficient_quota")
        statuses = [st for _, st in got]
        # the budget is checked before each request: 2 answers spend the 100
        # tokens, whichever hosts answered them; every request after is refused
        assert statuses == [200] * 2 + [429] * 6, \
            "BudgetTokens 100, 50 tokens an answer, over both hosts: %d answered 200 (want 2, then " \
            "429 insufficient_quota on both): %s" % (statuses.count(200), shown(got))
        sent = len(requests_for(ctx.up, spec))
        assert sent == 2, "the backend got %d requests, 2 answered (a refused one must not reach it)" % sent
        return "A 200, B 200, then 429 insufficient_quota on both"
    return with_key(ctx, {"Name": "redis-budget", "BudgetTokens": 100}, "bud-m", body)


def case_tpm(ctx):
    spec = "name=redis-tpm+ptok=30+ctok=20"  # 50 tokens an answer
    set_routing(ctx, {"tpm-m": {"Strategy": "Failover", "Backends": [backend("tpm", ctx.up.url(spec))]}})
    ctx.up.reset()

    def body(key):
        t0 = time.time()
        got = alternate(ctx, key, "tpm-m", 4, "rate_limit_exceeded")
        took = time.time() - t0
        statuses = [st for _, st in got]
        # Tpm 100: a token comes back every 0.6 s; 2 answers of 50 empty the
        # bucket, so a request within 0.6 s of the first answer is refused
        assert took < 0.6, "the 4 requests took %.2f s: past 0.6 s a token came back, the case " \
                           "tells nothing (%s)" % (took, shown(got))
        assert statuses == [200, 200, 429, 429], \
            "Tpm 100, 50 tokens an answer, A then B then A, B: %s (want 200 200 then 429 " \
            "rate_limit_exceeded on both)" % shown(got)
        sent = len(requests_for(ctx.up, spec))
        assert sent == 2, "the backend got %d requests, 2 answered (a refused one must not reach it)" % sent
        return "A 200, B 200, A 429, B 429 in %.2f s" % took
    return with_key(ctx, {"Name": "redis-tpm", "Tpm": 100}, "tpm-m", body)


def case_admin_change(ctx):
    set_routing(ctx, {"adm-base": model(["adm-base"], ctx.up)})
    took = []
    for i, (name, want_status) in enumerate((("adm-v1", 201), ("adm-v2", 200))):
        body = {"Strategy": "Failover", "Backends": [backend("b", ctx.up.url("name=" + name))]}
        t0 = time.time()
        r = fetch(ctx.a.port, "POST", "/admin/config/adm-new", body, admin_headers(ctx.a))
        t_admin = time.time() - t0
        assert r.status == want_status, (name, r.status, r.body[:300])
        tries = []

        def served():
            r = chat(ctx.b.port, "adm-new")
            tries.append(r.status)
            return r.status == 200 and served_by(r) == name
        ok = wait_for(served, SYNC_S)
        dt = time.time() - t0
        assert ok, "B did not serve %s %.1f s after A's admin call (answers %s)" % (
            "the model added" if i == 0 else "the changed backend", SYNC_S, tries[-5:])
        took.append((dt, t_admin))
    what = ("added model", "changed backend")
    note = ", ".join("%s %.2f s" % (w, dt) for w, (dt, _) in zip(what, took))
    slow = [(w, dt, ta) for w, (dt, ta) in zip(what, took) if dt >= CHANGE_LIMIT_S]
    assert not slow, "B served the change later than 1 s after A's admin call was sent: " + ", ".join(
        "%s %.2f s (the admin call itself %.2f s)" % s for s in slow)
    return "B served it: " + note


def case_responses(ctx):
    keys = ["rsp-k1", "rsp-k2"]
    set_routing(ctx, {"resp-m": {"Strategy": "RoundRobin", "Backends": [
        backend("one", ctx.up.url("name=rsp-one"), keys=keys),
        backend("two", ctx.up.url("name=rsp-two"), keys=keys)]}})
    ctx.up.reset()
    made = []
    for i in range(4):
        r = fetch(ctx.a.port, "POST", "/v1/responses", {"model": "resp-m", "input": "hi %d" % i})
        assert r.status == 200, ("A", i, r.status, r.body[:300])
        made.append((r.json()["id"], served_by(r)))
    where = [(e["spec"], e["headers"].get("authorization")) for e in ctx.up.requests()
             if e["method"] == "POST" and e["path"].endswith("/v1/responses")]
    assert len(set(where)) == 4, "the 4 responses were not made on 4 backend+key pairs: %s" % where
    deadline = time.time() + 2.0  # what A recorded reaches Redis as A answers
    problems = []
    for rid, name in made:
        while True:
            r = fetch(ctx.b.port, "GET", "/v1/responses/" + rid)
            if r.status == 200 or time.time() > deadline:
                break
            time.sleep(0.02)
        if r.status != 200 or r.json().get("id") != rid or served_by(r) != name:
            problems.append("GET %s on B: %d %s" % (rid, r.status, r.body[:200]))
        r = fetch(ctx.b.port, "POST", "/v1/responses",
                  {"model": "resp-m", "input": "more", "previous_response_id": rid})
        if r.status != 200 or r.json().get("previous_response_id") != rid or served_by(r) != name:
            problems.append("POST previous_response_id=%s on B: %d %s" % (rid, r.status, r.body[:200]))
    assert not problems, "\n".join(problems)


def case_cgi_host(ctx):
    names = ["cgi-rr-a", "cgi-rr-b", "cgi-rr-c"]
    models = {"cgi-rr3": model(names, ctx.up, "RoundRobin")}
    set_routing(ctx, models)
    c = LighttpdCgi(BIN, env=ctx.env)
    c.tag = "C(lighttpd-cgi)"
    problems = []
    try:
        c.start(models)
        wait_serving(ctx, models, hosts=[c])
        pair = (ctx.a, c)
        got = []
        for i in range(30):
            h = pair[i % 2]
            r = chat(h.port, "cgi-rr3")
            assert r.status == 200, (h.tag, i, r.status, r.body[:300])
            got.append((h.tag[0], served_by(r)))
        seq = [n for _, n in got]
        counts = {n: seq.count(n) for n in names}
        assert counts == {n: 10 for n in names}, (counts, shown(got))
        why = rr_break(seq, names)
        assert why is None, "round robin over A (FastCGI) and C (CGI) is not one cycle in " \
                            "configuration order (%s): %s" % (why, shown(got))
    finally:
        # a CGI program ends once what it told Redis is answered: gone in a moment
        if not wait_for(lambda: not program_pids(c), 5):
            problems.append("C's CGI programs still running 5 s after the last request: %s" %
                            program_pids(c))
        c.stop()
    reports = c.sanitizer_reports()
    if reports:
        problems.append("C: sanitizer reports:\n%s" % "\n".join(reports)[-3000:])
    assert not problems, "\n".join(problems)
    return "10 each, one cycle over A,C"


def case_redis_hung(ctx):
    names = ["hung-a", "hung-b", "hung-c"]
    set_routing(ctx, {"hung-m": model(names, ctx.up, "RoundRobin")})
    before = {h.tag: metric_value(h, "llmproxy_redis_fallbacks_total") for h in ctx.hosts}
    marks = {h.tag: len(h.log()) for h in ctx.hosts}
    got = []  # (host, status or error, seconds)
    try:
        ctx.redis.sigstop()
        t_stop = time.time()
        for i in range(60):
            h = ctx.hosts[i % 2]
            t0 = time.time()
            try:
                r = chat(h.port, "hung-m", timeout=10)
                got.append((h.tag[0], r.status, time.time() - t0))
            except Exception as e:  # noqa: BLE001
                got.append((h.tag[0], repr(e), time.time() - t0))
            # paced over a second and more: past the first timeout, the 100 ms
            # backoff and the connection made again (which Redis never answers),
            # and past a few of the 250 ms configuration polls
            time.sleep(0.02)
        after = {h.tag: metric_value(h, "llmproxy_redis_fallbacks_total") for h in ctx.hosts}
    finally:
        ctx.redis.sigcont()
    t_cont = time.time()
    hung_s = t_cont - t_stop
    problems = []
    bad = ["%s#%d: %s (%.3f s)" % (t, i, st, dt) for i, (t, st, dt) in enumerate(got) if st != 200]
    if bad:
        problems.append("%d of 60 requests not answered 200 while Redis was hung: %s" % (
            len(bad), ", ".join(bad[:5])))
    times = [dt for _, _, dt in got]
    slow = ["%s#%d %.3f s" % (t, i, dt) for i, (t, _, dt) in enumerate(got) if dt >= 0.5]
    if slow:
        problems.append("%d request(s) took 0.5 s or more while Redis was hung (timeout 50 ms): %s" % (
            len(slow), ", ".join(slow[:10])))
    med = median(times)
    if med >= 0.1:
        problems.append("the median request took %.3f s while Redis was hung (timeout 50 ms)" % med)
    for h in ctx.hosts:
        b, a = before[h.tag], after[h.tag]
        if not isinstance(b, float) or not isinstance(a, float) or a - b < 30:
            problems.append("%s's llmproxy_redis_fallbacks_total: %s before, %s after its 30 requests "
                            "decided without Redis" % (h.tag, b, a))
    # let go: Redis answers what waited first; each responder is back on its
    # own (a dropped connection is made again after its backoff, 5 s at most)
    deadline = t_cont + 10.0
    rounds = []
    exact = None
    while exact is None and time.time() < deadline:
        seq = []
        for i in range(12):
            h = ctx.hosts[i % 2]
            r = chat(h.port, "hung-m", timeout=10)
            if r.status != 200:
                problems.append("%s after SIGCONT: %d %s" % (h.tag, r.status, r.body[:200]))
                break
            seq.append((h.tag[0], served_by(r)))
        else:
            if rr_break([n for _, n in seq], names) is None:
                exact = time.time() - t_cont
            else:
                rounds.append(shown(seq))
        if problems:
            break
    if exact is None and not problems:
        problems.append("round robin over both hosts not one cycle again 10 s after SIGCONT "
                        "(%d rounds of 12, the last: %s)" % (len(rounds), rounds[-1:] or "none"))
    for h in ctx.hosts:
        took, last = wait_metric(h, 1.0, max(0.5, deadline - time.time()))
        if took is None:
            problems.append("%s's /metrics 10 s after SIGCONT: llmproxy_redis_up %s, not 1" % (h.tag, last))
    # every responder that gave up on Redis says it is back (the next cases
    # need each to tell a new outage again)
    def pids_saying(text, what):
        return {m.group(1) for l in text.splitlines() if what(l.lower())
                for m in [re.search(r"llmproxy\[(\d+)\]", l)] if m}

    def back_everywhere():
        for h in ctx.hosts:
            text = h.log()[marks[h.tag]:]
            down = pids_saying(text, lambda l: "redis" in l and "unreachable" in l)
            up = pids_saying(text, lambda l: "redis" in l and "answers again" in l)
            if down - up:
                return False
        return True
    if not wait_for(back_everywhere, max(0.5, deadline - time.time())):
        for h in ctx.hosts:
            text = h.log()[marks[h.tag]:]
            down = pids_saying(text, lambda l: "redis" in l and "unreachable" in l)
            up = pids_saying(text, lambda l: "redis" in l and "answers again" in l)
            if down - up:
                problems.append("%s: responder(s) %s logged Redis unreachable and not that it answers "
                                "again 10 s after SIGCONT:\n%s" % (h.tag, sorted(down - up),
                                                                   "\n".join(text.splitlines()[-8:])))
    assert not problems, "\n".join(problems)
    return "60 requests in %.1f s hung: median %.3f s, slowest %.3f s; shared again %.2f s after " \
           "SIGCONT" % (hung_s, med, max(times), exact)


def case_redis_killed(ctx):
    set_routing(ctx, {"load-m": model(["load-a", "load-b"], ctx.up, "RoundRobin")})
    stop = threading.Event()
    lock = threading.Lock()
    count = {"all": 0, ctx.a.tag: 0, ctx.b.tag: 0}
    slowest = [0.0]
    errors = []

    def worker(h, quota):
        # each of the 4 threads: at least `quota` requests, paced (about 100 a
        # second per host), until the case is over
        n = 0
        while (n < quota or not stop.is_set()) and n < 3000:
            t0 = time.time()
            try:
                r = chat(h.port, "load-m", timeout=15)
                if r.status != 200:
                    errors.append("%s #%d: %d %s" % (h.tag, n, r.status, r.body[:200]))
            except Exception as e:  # noqa: BLE001
                errors.append("%s #%d: %r" % (h.tag, n, e))
            n += 1
            with lock:
                count["all"] += 1
                count[h.tag] += 1
                slowest[0] = max(slowest[0], time.time() - t0)
            time.sleep(0.01)

    def total():
        with lock:
            return count["all"]
    threads = [threading.Thread(target=worker, args=(h, 100), daemon=True)
               for h in (ctx.a, ctx.a, ctx.b, ctx.b)]
    problems = []
    marks = {}
    responders = {}
    during = 0
    try:
        for t in threads:
            t.start()
        assert wait_for(lambda: total() >= 50, 30), "50 requests did not finish in 30 s"
        marks = {h.tag: len(h.log()) for h in ctx.hosts}
        responders = {h.tag: sorted(p for p, prog in program_pids(h).items() if prog == "llmproxy.fcgi")
                      for h in ctx.hosts}
        ctx.redis.kill()
        t_kill = time.time()
        at_kill = total()
        took, last = wait_metric(ctx.a, 0.0, 2.0)
        if took is None:
            problems.append("A's /metrics 2 s after Redis was killed: llmproxy_redis_up %s, not 0" % last)
        # down for a while (half a second at least, ~50 requests): the hosts
        # fail to reconnect a few times, and serve from their own state meanwhile
        if not wait_for(lambda: total() >= max(100, at_kill + 50) and time.time() - t_kill >= 0.5, 30):
            problems.append("the load stalled while Redis was down (%d requests)" % total())
        during = total() - at_kill
        ctx.redis.start()
        ctx.t_redis_back = time.time()
        at_back = total()
        took_up, last = wait_metric(ctx.a, 1.0, 5.0)
        if took_up is None:
            problems.append("A's /metrics 5 s after Redis came back: llmproxy_redis_up %s, not 1" % last)
        if not wait_for(lambda: total() >= at_back + 40, 30):
            problems.append("the load stalled after Redis came back (%d requests)" % total())
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        if not ctx.redis.running():  # the later cases need it
            ctx.redis.start()
            ctx.t_redis_back = time.time()
    assert not any(t.is_alive() for t in threads), "a client thread is stuck"
    if errors:
        problems.insert(0, "%d of %d requests failed: %s" % (len(errors), count["all"], errors[:5]))
    # each responder says it once, loudly (not once a request)
    for h in ctx.hosts:
        lines = unreachable_lines(h.log()[marks.get(h.tag, 0):])
        per = {}
        for l in lines:
            m = re.search(r"llmproxy\[(\d+)\]", l)
            per[int(m.group(1)) if m else None] = per.get(int(m.group(1)) if m else None, 0) + 1
        if not lines:
            problems.append("%s's error log has no line with 'redis' and 'unreachable'" % h.tag)
            continue
        silent = [p for p in responders.get(h.tag, []) if p not in per]
        if silent:
            problems.append("%s: responder(s) %s logged no 'redis ... unreachable' line (of %s): %s" % (
                h.tag, silent, responders.get(h.tag), lines[:3]))
        spam = {p: n for p, n in per.items() if n > 2}
        if spam:
            problems.append("%s: 'redis ... unreachable' logged again and again for one outage %s: %s" % (
                h.tag, spam, lines[:3]))
    assert not problems, "\n".join(problems)
    return "%d requests on A, %d on B, %d while Redis was down; slowest %.2f s" % (
        count[ctx.a.tag], count[ctx.b.tag], during, slowest[0])


def case_reseeded(ctx):
    if ctx.t_redis_back is None:  # the case before did not get that far
        ctx.redis.kill()
        ctx.redis.start()
        ctx.t_redis_back = time.time()
    t_back = ctx.t_redis_back
    deadline = max(t_back + 3.0, time.time())
    with open(ctx.a.routing) as f:
        want = f.read().strip()
    while True:
        v = ctx.redis.cli("HGET", "llmproxy:config", "v")
        routing = ctx.redis.cli("HGET", "llmproxy:config", "routing")
        if (v and routing == want) or time.time() > deadline:
            break
        time.sleep(0.05)
    assert v, "llmproxy:config v is empty %.1f s after Redis came back empty" % (time.time() - t_back)
    assert routing == want, "llmproxy:config routing is not A's routing file: %r vs %r" % (
        routing[:300], want[:300])
    models = {"reseed-m": model(["reseed"], ctx.up)}
    t0 = time.time()
    write_routing(ctx.b.routing, models)
    ok = wait_for(lambda: served_models(ctx.a) == ["reseed-m"], SYNC_S)
    dt = time.time() - t0
    assert ok, "a change of B's routing file is not served by A after %.0f s (A serves %s)" % (
        SYNC_S, served_models(ctx.a))
    assert dt < CHANGE_LIMIT_S, "A served B's routing file change %.2f s after it was written" % dt
    r = chat(ctx.a.port, "reseed-m")
    assert r.status == 200 and served_by(r) == "reseed", (r.status, r.body[:300])
    wait_serving(ctx, models)
    return "A served B's change %.2f s after it was written" % dt


def case_stop(ctx):
    problems = []
    codes = []
    for h in ctx.hosts:
        why, code = stop_clean(h)
        codes.append("%s exited %s" % (h.tag[0], code))
        if why:
            problems.append(why)
    for h in ctx.hosts:
        reports = h.sanitizer_reports()
        if reports:
            problems.append("%s: sanitizer reports:\n%s" % (h.tag, "\n".join(reports)[-3000:]))
    bad = ctx.up.violations()
    if bad:
        problems.append("malformed upstream requests: " + json.dumps(bad[:3], indent=1)[-2000:])
    assert not problems, "\n".join(problems)
    return ", ".join(codes)


CASES = [
    ("both hosts' programs run with LLMPROXY_REDIS_URL", case_env),
    ("the configuration is in Redis once both hosts run", case_seeded),
    ("round robin exact across both", case_round_robin),
    ("weighted exact across both", case_weighted),
    ("key rotation across both", case_key_rotation),
    ("a 429 on A cools the key for B", case_cooldown),
    ("circuit opened on A is open on B", case_circuit),
    ("one key's Rpm holds across both", case_rpm),
    ("a budget holds across both", case_budget),
    ("a Tpm holds across both", case_tpm),
    ("an admin change on one host is served by the other within 1 s", case_admin_change),
    ("Responses follow-up on the other host", case_responses),
    ("a CGI host shares too", case_cgi_host),
    ("a hung Redis (SIGSTOP) delays no request past the timeout", case_redis_hung),
    ("Redis killed under load and brought back", case_redis_killed),
    ("Redis restarted empty is re-seeded", case_reseeded),
    ("both instances stop cleanly, no sanitizer reports, well-formed upstream requests", case_stop),
]


def run(report):
    ctx = Ctx()
    started = []
    try:
        try:
            ctx.up = FakeUpstream().start()
            started.append(ctx.up)
            ctx.redis = RedisServer()
            started.append(ctx.redis)
            ctx.redis.start()
            env = dict(E2E_ENV, LLMPROXY_REDIS_URL=ctx.redis.url())
            ctx.env = env
            ctx.a = Lighttpd(BIN, procs=2, env=env)
            ctx.a.tag = "A(lighttpd)"
            ctx.b = Apache(BIN, procs=1, env=env)
            ctx.b.tag = "B(apache)"
            started += [ctx.a, ctx.b]
            ctx.a.start(routing_rr(ctx.up))
            ctx.b.start(routing_rr(ctx.up))
        except Exception:  # noqa: BLE001
            report(False, "redis: Redis and both hosts start", traceback.format_exc()[-3000:])
            return
        failed = False
        for name, fn in CASES:
            t0 = time.time()
            try:
                note = fn(ctx)
                report(True, "redis: %s%s (%.2fs)" % (name, " [%s]" % note if note else "",
                                                      time.time() - t0))
            except Exception:  # noqa: BLE001
                failed = True
                report(False, "redis: %s" % name, "after %.2fs:\n%s" % (
                    time.time() - t0, traceback.format_exc()[-3000:]))
        if failed:
            print("        (redis: state and logs kept in %s and %s)" % (ctx.a.state, ctx.b.state),
                  flush=True)
    finally:
        for s in reversed(started):
            try:
                s.stop()
            except Exception:  # noqa: BLE001
                traceback.print_exc(file=sys.stderr)


if __name__ == "__main__":
    results = []

    def _report(ok, name, detail=""):
        results.append(ok)
        print(("ok      " if ok else "FAILED  ") + name, flush=True)
        if not ok and detail:
            print("        " + detail.replace("\n", "\n        "), flush=True)
    run(_report)
    print("%d passed, %d failed" % (results.count(True), results.count(False)))
    sys.exit(0 if all(results) else 1)
