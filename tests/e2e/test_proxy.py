"""End-to-end tests of the responder behind a real lighttpd, against the fake upstream."""

import json
import os
import re
import signal
import socket
import threading
import time

from harness import backend, chat, fetch, free_port, open_request, request, write_routing

TESTS = []


def test(fn=None, servers=("lighttpd", "apache")):
    """Registers a test; servers: the web servers it runs against."""
    def register(f):
        f.servers = servers
        TESTS.append(f)
        return f
    return register(fn) if fn is not None else register


class Env:
    """Shared by the tests: one web server (lighttpd with 2 responder processes, or
    Apache with 1) and one fake upstream."""
    server = None
    server_class = None
    up = None

    @classmethod
    def routing(cls, models):
        write_routing(cls.server.routing, models)

    @classmethod
    def port(cls):
        return cls.server.port


def U(spec):
    return Env.up.url(spec)


def single(spec, **kw):
    return {"m": {"Strategy": "Failover", "Backends": [backend("a", U(spec), **kw)]}}


def served_by(r):
    return r.json()["backend"]


def requests_for(prefix):
    return [e for e in Env.up.requests() if e["spec"].startswith(prefix)]


def log_mark(srv):
    """Where the log ends once it is quiet: a request's line is written just after
    its answer, so the line of one answered a moment ago may still be on its way."""
    last = len(srv.log())
    end = time.time() + 2
    while time.time() < end:
        time.sleep(0.05)
        now = len(srv.log())
        if now == last:
            break
        last = now
    return last


def wait_for(cond, timeout=5.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


# ---------------------------------------------------------------- basics

@test
def health_and_models():
    Env.routing({
        "m1": {"Strategy": "Failover", "Backends": [backend("a", U("ok"))]},
        "off": {"Strategy": "Failover", "Backends": [backend("a", U("ok"), enabled=False)]},
        "org/m2": {"Strategy": "RoundRobin", "Backends": [backend("a", U("ok"))]},
    })
    s, h, b = request(Env.port(), "GET", "/health")
    assert s == 200 and json.loads(b) == {"Status": "Healthy"}, (s, b)
    s, h, b = request(Env.port(), "GET", "/v1/models")
    d = json.loads(b)
    assert s == 200 and d["object"] == "list", (s, b)
    assert sorted(m["id"] for m in d["data"]) == ["m1", "org/m2"], d
    assert all(m["object"] == "model" for m in d["data"])
    s, h, b = request(Env.port(), "GET", "/v1/models/org/m2")
    assert s == 200 and json.loads(b)["id"] == "org/m2", (s, b)
    s, h, b = request(Env.port(), "GET", "/v1/models/nope")
    assert s == 404 and json.loads(b)["error"]["code"] == "model_not_found", (s, b)


@test
def body_passes_unchanged_and_headers_filtered():
    Env.routing(single("name=a", keys=["sk-test-secret-1"]))
    Env.up.reset()
    raw = ('{"model":"m","messages":[{"role":"user","content":"h\\u00e9"}],'
           '"temperature":0.50,"custom":{"x":[1,2.0e3,null]}}')
    r = fetch(Env.port(), "POST", "/v1/chat/completions", raw,
              {"Authorization": "Bearer client-token", "Cookie": "session=1",
               "Connection": "close", "User-Agent": "OpenAI/Python 1.0", "X-Custom": "no"})
    assert r.status == 200, (r.status, r.body)
    got = Env.up.requests()[-1]
    assert got["body"] == raw, got["body"]
    assert got["path"] == "/name=a/v1/chat/completions", got["path"]
    hd = got["headers"]
    assert hd["authorization"] == "Bearer sk-test-secret-1", hd
    assert "cookie" not in hd and "x-custom" not in hd, hd
    assert hd["content-type"] == "application/json", hd
    assert hd["user-agent"] == "OpenAI/Python 1.0", hd
    assert "expect" not in hd, hd
    # the exact header set, each once, names as sent (a strict server sees this)
    names = [n for n, _ in got["raw_headers"]]
    assert sorted(n.lower() for n in names) == sorted(
        ["host", "accept", "authorization", "content-type", "content-length", "user-agent"]), names
    assert len(names) == len({n.lower() for n in names}), names
    # answer headers: useful ones through, hop-by-hop and cookies not
    assert r.headers["x-request-id"] == ["up-req-1"], r.headers
    assert r.headers["openai-processing-ms"] == ["7"], r.headers
    assert r.headers["x-ratelimit-remaining-requests"] == ["99"], r.headers
    assert "set-cookie" not in r.headers, r.headers
    assert r.headers["content-type"] == ["application/json"], r.headers
    assert "x-llmproxy-request-id" in r.headers


@test
def upstream_headers_exact_for_sdk_requests():
    """What the OpenAI SDKs send (a Content-Type of their own among it) reaches a strict
    backend as exactly one of each header, the client's key never."""
    Env.routing(single("name=sdk", keys=["sk-sdk-upstream-key-1"]))
    Env.up.reset()
    sdk = {"Content-Type": "application/json", "Accept": "application/json",
           "User-Agent": "OpenAI/Python 1.54.0", "X-Stainless-Lang": "python",
           "X-Stainless-Package-Version": "1.54.0", "OpenAI-Beta": "assistants=v2",
           "Authorization": "Bearer sk-client-key-never-forwarded", "X-Title": "my app",
           "HTTP-Referer": "https://example.org/"}
    for stream in (False, True):
        r = chat(Env.port(), "m", stream=stream, headers=sdk)
        assert r.status == 200, (stream, r.status, r.body[:300])
    for e in requests_for("name=sdk"):
        fields = e["raw_headers"]
        names = sorted(n.lower() for n, _ in fields)
        assert names == sorted(["host", "accept", "authorization", "content-type", "content-length",
                                "user-agent", "x-stainless-lang", "openai-beta", "x-title",
                                "http-referer"]), names
        d = {n.lower(): v for n, v in fields}
        assert d["authorization"] == "Bearer sk-sdk-upstream-key-1", d
        assert d["content-type"] == "application/json" and d["accept"] == "application/json", d
        assert d["x-stainless-lang"] == "python" and d["openai-beta"] == "assistants=v2", d
    # the body was checked to be JSON: whatever the client labelled it, one JSON label
    Env.up.reset()
    r = fetch(Env.port(), "POST", "/v1/chat/completions", {"model": "m", "messages": []},
              {"Content-Type": "text/plain"})
    assert r.status == 200, r.body
    fields = requests_for("name=sdk")[-1]["raw_headers"]
    assert [v for n, v in fields if n.lower() == "content-type"] == ["application/json"], fields


@test
def model_mapping_rewrites_only_model():
    Env.routing({"phi-3-mini": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=a"), model="microsoft/phi-3-mini-128k-instruct")]}})
    Env.up.reset()
    raw = '{ "model" : "phi-3-mini", "n":1.50 ,"unknown_field":{"deep":["\\"q\\""]}}'
    r = fetch(Env.port(), "POST", "/v1/chat/completions", raw)
    assert r.status == 200, r.body
    got = Env.up.requests()[-1]["body"]
    assert got == raw.replace('"phi-3-mini"', '"microsoft/phi-3-mini-128k-instruct"'), got


@test
def completions_and_embeddings_endpoints():
    Env.routing(single("name=a"))
    Env.up.reset()
    r = chat(Env.port(), "m", path="/v1/completions", extra={"prompt": "x"})
    assert r.status == 200 and r.json()["path"] == "/name=a/v1/completions", r.body
    r = fetch(Env.port(), "POST", "/v1/embeddings", {"model": "m", "input": "abc"})
    assert r.status == 200 and r.json()["object"] == "list", r.body
    assert Env.up.requests()[-1]["path"] == "/name=a/v1/embeddings"


# ---------------------------------------------------------------- failover

@test
def failover_on_each_transient_status():
    for st in (401, 403, 404, 408, 409, 429, 500, 502, 503, 504):
        Env.routing({"m": {"Strategy": "Failover", "Backends": [
            backend("bad", U("name=bad+status=%d" % st)), backend("good", U("name=good"))]}})
        r = chat(Env.port(), "m")
        assert r.status == 200 and served_by(r) == "good", (st, r.status, r.body)


@test
def no_failover_on_client_errors():
    for st in (400, 413, 422):
        Env.up.reset()
        Env.routing({"m": {"Strategy": "Failover", "Backends": [
            backend("first", U("name=first+status=%d" % st)), backend("second", U("name=second"))]}})
        r = chat(Env.port(), "m")
        assert r.status == st, (st, r.status, r.body)
        assert r.json()["error"]["code"] == "fake_%d" % st, r.body
        assert not requests_for("name=second"), "second backend was tried on %d" % st


@test
def failover_on_refused_connection():
    dead = free_port()
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("dead", "http://127.0.0.1:%d/v1" % dead), backend("good", U("name=good"))]}})
    r = chat(Env.port(), "m")
    assert r.status == 200 and served_by(r) == "good", r.body


@test
def failover_on_timeout_and_slow_first_byte():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("hang", U("name=hang+hang=1"), timeout=1), backend("good", U("name=good"))]}})
    t = time.time()
    r = chat(Env.port(), "m")
    took = time.time() - t
    assert r.status == 200 and served_by(r) == "good", r.body
    assert 0.9 < took < 2.5, took
    # slow but within its timeout: the first backend answers
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("slow", U("name=slow+delay=400"), timeout=3), backend("good", U("name=good"))]}})
    r = chat(Env.port(), "m")
    assert r.status == 200 and served_by(r) == "slow", r.body


@test
def all_rate_limited_gives_429_with_retry_after():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=a+status=429+ra=7")), backend("b", U("name=b+status=429+ra=3"))]}})
    r = chat(Env.port(), "m")
    assert r.status == 429, (r.status, r.body)
    assert r.headers.get("retry-after") == ["3"], r.headers
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"}, e
    assert "key-" not in r.body.decode()


@test
def all_failed_verdicts():
    dead = free_port()
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=a+status=500")), backend("b", "http://127.0.0.1:%d/v1" % dead),
        backend("c", U("name=c+status=429+ra=1"))]}})
    r = chat(Env.port(), "m")
    assert r.status == 502 and r.json()["error"]["code"] == "all_backends_failed", r.body
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=a+hang=1"), timeout=0.5), backend("b", U("name=b+hang=1"), timeout=0.5)]}})
    r = chat(Env.port(), "m")
    assert r.status == 504, (r.status, r.body)
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=a"), enabled=False)]}})
    r = chat(Env.port(), "m")
    assert r.status == 503, (r.status, r.body)
    for resp in (r,):
        assert "key-" not in resp.body.decode()


@test
def empty_or_html_200_fails_over():
    for bad in ("empty=1", "html=1"):
        Env.routing({"m": {"Strategy": "Failover", "Backends": [
            backend("bad", U("name=bad+" + bad)), backend("good", U("name=good"))]}})
        r = chat(Env.port(), "m")
        if bad == "empty=1":
            assert r.status == 200 and served_by(r) == "good", (bad, r.body)
        else:
            # an HTML 200 is relayed as it is: the client asked, the backend answered
            assert r.status == 200, (bad, r.body)


# ---------------------------------------------------------------- routing and keys

def run_parallel(n, fn):
    out = [None] * n
    errs = []

    def work(i):
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]
    return out


@test
def round_robin_exact_across_processes():
    Env.routing({"rr": {"Strategy": "RoundRobin", "Backends": [
        backend("a", U("name=a+delay=30")), backend("b", U("name=b+delay=30"))]}})
    seq = [served_by(chat(Env.port(), "rr")) for _ in range(6)]
    assert seq in (["a", "b"] * 3, ["b", "a"] * 3), seq
    mark = len(Env.server.log())
    got = run_parallel(60, lambda i: served_by(chat(Env.port(), "rr")))
    assert got.count("a") == 30 and got.count("b") == 30, (got.count("a"), got.count("b"))
    # (each request's log line is written just after its answer)
    wait_for(lambda: len(re.findall(r"req=\S+ /chat", Env.server.log()[mark:])) >= 60, 3)
    pids = set(re.findall(r"llmproxy\[(\d+)\] req=\S+ /chat", Env.server.log()[mark:]))
    assert len(pids) == Env.server.procs, "requests were served by %d responder process(es)" % len(
        pids)


@test
def weighted_exact_proportions():
    Env.routing({"w": {"Strategy": "Weighted", "Backends": [
        backend("heavy", U("name=heavy"), weight=3), backend("light", U("name=light"), weight=1)]}})
    got = [served_by(chat(Env.port(), "w")) for _ in range(40)]
    assert got.count("heavy") == 30 and got.count("light") == 10, got
    # spread, not bunched: never more than 3 heavy in a row
    assert "heavy" * 4 not in "".join(got), got
    got = run_parallel(40, lambda i: served_by(chat(Env.port(), "w")))
    assert got.count("heavy") == 30 and got.count("light") == 10, got


@test
def keys_rotate_per_request():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=keys"), keys=["k1", "k2", "k3"])]}})
    Env.up.reset()
    for _ in range(9):
        assert chat(Env.port(), "m").status == 200
    keys = [e["headers"]["authorization"] for e in requests_for("name=keys")]
    assert sorted(keys) == sorted(["Bearer k1", "Bearer k2", "Bearer k3"] * 3), keys
    assert keys[0:3] in ([keys[3:6]]) and len(set(keys[0:3])) == 3, keys


@test
def bad_key_tries_next_key_then_next_backend():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=a+status=401"), keys=["bad1", "bad2"]), backend("b", U("name=b"))]}})
    Env.up.reset()
    r = chat(Env.port(), "m")
    assert r.status == 200 and served_by(r) == "b", r.body
    keys = sorted(e["headers"]["authorization"] for e in requests_for("name=a"))
    assert keys == ["Bearer bad1", "Bearer bad2"], keys


# ---------------------------------------------------------------- streaming

@test
def stream_relayed_unmodified():
    Env.routing(single("name=s+chunks=5"))
    r = chat(Env.port(), "m", stream=True)
    assert r.status == 200, r.body
    assert r.headers["content-type"][0].startswith("text/event-stream"), r.headers
    ev = r.events()
    assert len(ev) == 6 and ev[-1] == "[DONE]", ev
    assert [json.loads(e)["i"] for e in ev[:-1]] == [0, 1, 2, 3, 4]


@test
def stream_first_event_error_fails_over_invisibly():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("bad", U("name=bad+errevent=1")), backend("good", U("name=good+chunks=2+comment=1"))]}})
    r = chat(Env.port(), "m", stream=True)
    assert r.status == 200, r.body
    assert b"overloaded" not in r.body, r.body
    ev = r.events()
    assert ev[-1] == "[DONE]" and json.loads(ev[0])["backend"] == "good", ev


@test
def stream_broken_midway_ends_with_error_event():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("drop", U("name=drop+chunks=5+drop=2")), backend("good", U("name=good"))]}})
    r = chat(Env.port(), "m", stream=True)
    assert r.status == 200, r.body
    ev = r.events()
    assert "[DONE]" not in ev, ev
    assert len(ev) == 3, ev
    assert [json.loads(e).get("backend") for e in ev[:2]] == ["drop", "drop"], ev
    assert "error" in json.loads(ev[2]), ev


@test
def stream_chunks_arrive_without_delay():
    Env.routing(single("name=t+chunks=5+gap=300"))
    r = chat(Env.port(), "m", stream=True)
    assert r.status == 200
    # split the body into events with their arrival times
    lat = []
    for t_arr, data in r.chunks:
        for m in re.finditer(rb'"t": ([0-9.]+)', data):
            lat.append(t_arr - float(m.group(1)))
    assert len(lat) == 5, (len(lat), r.chunks)
    assert max(lat) < 0.1, lat
    gaps = [b[0] - a[0] for a, b in zip(r.chunks, r.chunks[1:])]
    assert max(gaps) > 0.25, gaps  # really streamed, not one final burst


@test
def client_disconnect_aborts_upstream():
    Env.routing(single("name=endless+endless=1+gap=100"))
    Env.up.reset()
    sock = open_request(Env.port(), "POST", "/v1/chat/completions",
                        {"model": "m", "stream": True, "messages": []})
    data = b""
    while b"data:" not in data:
        data += sock.recv(4096)
    time.sleep(0.2)
    t_close = time.time()
    sock.close()
    ok = wait_for(lambda: all("ended" in e for e in requests_for("name=endless")), 3)
    assert ok, "upstream stream still running 3 s after the client left"
    ended = requests_for("name=endless")[0]["ended"]
    assert ended - t_close < 1.0, ended - t_close


# ---------------------------------------------------------------- errors

@test
def client_errors_in_openai_shape():
    Env.routing(single("name=a", keys=["sk-never-shown"]))
    p = Env.port()
    cases = [
        ("POST", "/v1/chat/completions", "{not json", 400, None),
        ("POST", "/v1/chat/completions", "[1,2]", 400, None),
        ("POST", "/v1/chat/completions", '{"messages":[]}', 400, None),
        ("POST", "/v1/chat/completions", '{"model":42}', 400, None),
        ("POST", "/v1/chat/completions", '{"model":"m","model":"m"}', 400, None),
        ("POST", "/v1/chat/completions", '{"model":"nope"}', 404, "model_not_found"),
        ("GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
        ("POST", "/v1/models", "{}", 405, "method_not_allowed"),
        ("GET", "/v1/nothing", None, 404, "unknown_url"),
    ]
    for method, path, body, want, code in cases:
        s, h, b = request(p, method, path, body)
        assert s == want, (method, path, body, s, b)
        e = json.loads(b)["error"]
        assert set(e) == {"message", "type", "param", "code"}, e
        assert isinstance(e["message"], str) and e["message"], e
        if code:
            assert e["code"] == code, e
        assert b"sk-never-shown" not in b


@test
def body_over_cap_is_413():
    # the shared server runs with LLMPROXY_MAX_BODY_BYTES=262144
    Env.routing(single("name=a"))
    big = '{"model":"m","pad":"' + "x" * 300000 + '"}'
    s, h, b = request(Env.port(), "POST", "/v1/chat/completions", big)
    assert s == 413, (s, b[:200])
    ok = '{"model":"m","pad":"' + "x" * 200000 + '"}'
    s, h, b = request(Env.port(), "POST", "/v1/chat/completions", ok)
    assert s == 200, (s, b[:200])


@test
def log_line_per_request_without_keys():
    Env.routing({"logm": {"Strategy": "Failover", "Backends": [
        backend("first", U("name=first+status=500"), keys=["sk-secret-log-1"]),
        backend("second", U("name=second"), keys=["sk-secret-log-2"])]}})
    r = chat(Env.port(), "logm")
    rid = r.headers["x-llmproxy-request-id"][0]
    assert wait_for(lambda: ("req=" + rid) in Env.server.log(), 2)
    line = [l for l in Env.server.log().splitlines() if ("req=" + rid + " ") in l][0]
    assert "model=logm" in line and "status=200" in line, line
    assert re.search(r"first#0:500:[0-9.]+ms second#0:200:[0-9.]+ms", line), line
    assert re.search(r" ms=[0-9.]+", line), line
    assert "sk-secret-log" not in Env.server.log()


# ---------------------------------------------------------------- concurrency, reload, lifecycle

@test
def hundred_streams_and_a_quick_request():
    Env.routing({
        "slow": {"Strategy": "Failover", "Backends": [backend("s", U("name=s+chunks=10+gap=150"))]},
        "fast": {"Strategy": "Failover", "Backends": [backend("f", U("name=f"))]},
    })
    results = [None] * 100
    started = threading.Barrier(101)

    def stream(i):
        started.wait()
        results[i] = chat(Env.port(), "slow", stream=True, timeout=60)
    ts = [threading.Thread(target=stream, args=(i,)) for i in range(100)]
    for t in ts:
        t.start()
    started.wait()
    time.sleep(0.5)  # the streams are open now
    quick = []
    for _ in range(5):
        t0 = time.time()
        r = chat(Env.port(), "fast")
        quick.append(time.time() - t0)
        assert r.status == 200
    for t in ts:
        t.join()
    for r in results:
        ev = r.events()
        assert r.status == 200 and len(ev) == 11 and ev[-1] == "[DONE]", (r.status, ev)
    assert sorted(quick)[2] < 0.05, quick  # median of 5, within 50 ms
    assert max(quick) < 0.2, quick


@test
def hot_reload_next_request_sees_change():
    Env.routing({"hr": {"Strategy": "Failover", "Backends": [backend("one", U("name=one"))]}})
    assert served_by(chat(Env.port(), "hr")) == "one"
    for i in range(5):
        name = "v%d" % i
        Env.routing({"hr": {"Strategy": "Failover", "Backends": [backend(name, U("name=" + name))]}})
        assert served_by(chat(Env.port(), "hr")) == name
    # a broken file keeps the last good config
    with open(Env.server.routing, "w") as f:
        f.write("{ broken")
    try:
        assert served_by(chat(Env.port(), "hr")) == "v4"
    finally:
        Env.routing({})


def _gone(pids):
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split()[2] != "Z":
                    return False
        except FileNotFoundError:
            pass
    return True


@test
def stopping_lighttpd_leaves_no_responder():
    # Ctrl-C on `make run` reaches the whole process group; a service manager
    # sends SIGTERM to lighttpd alone; a crash kills lighttpd with SIGKILL
    for how in ("group-sigint", "sigterm", "sigkill"):
        srv = Env.server_class(Env.server.binary, procs=2)
        srv.start({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=a"))]}})
        try:
            pids = srv.responder_pids()
            assert len(pids) == srv.procs, pids
            assert chat(srv.port, "m").status == 200
            if how == "group-sigint":
                os.killpg(srv.proc.pid, signal.SIGINT)
            else:
                # lighttpd: run.sh exec'd it; Apache: run.sh is the programs' parent
                os.kill(srv.proc.pid, signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
            srv.proc.wait(timeout=10)
            assert wait_for(lambda: _gone(pids), 5), "%s: responders still running: %s" % (how, pids)
        finally:
            srv.stop()
