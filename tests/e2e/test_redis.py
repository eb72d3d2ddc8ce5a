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
from harness import E2E_ENV, ROOT, Apache, Lighttpd, backend, chat, fetch, write_routing
from redis_server import RedisServer

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


def wait_for(cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


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
    ("an admin change on one host is served by the other within 1 s", case_admin_change),
    ("Responses follow-up on the other host", case_responses),
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
