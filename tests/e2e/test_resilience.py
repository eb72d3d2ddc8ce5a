"""End-to-end tests of key and backend health, deadlines and hostile input and faults.

Every case here is a row of tests/hostile.md; keep the two in step."""

import json
import re
import socket
import time

from harness import backend, chat, fetch, open_request, request
from test_proxy import Env, U, requests_for, served_by, test, wait_for


def keys_seen(spec_prefix):
    return [e["headers"].get("authorization", "") for e in requests_for(spec_prefix)]


def log_since(mark):
    return Env.server.log()[mark:]


@test
def rate_limited_key_cools_and_is_skipped():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=rl+status=429+ra=30+onlykey=rl-1"), keys=["rl-1", "rl-2"])]}})
    Env.up.reset()
    for _ in range(6):
        r = chat(Env.port(), "m")
        assert r.status == 200, r.body
    seen = keys_seen("name=rl")
    assert seen.count("Bearer rl-1") == 1, seen  # tried once, then cooled for 30 s
    assert seen.count("Bearer rl-2") == 6, seen


@test
def rejected_key_is_taken_out_and_logged():
    mark = len(Env.server.log())
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=rj+status=401+onlykey=bad-key-1"), keys=["bad-key-1", "ok-key-2"])]}})
    Env.up.reset()
    for _ in range(5):
        assert chat(Env.port(), "m").status == 200
    seen = keys_seen("name=rj")
    assert seen.count("Bearer bad-key-1") == 1, seen
    assert wait_for(lambda: "REJECTED key #0" in log_since(mark), 2), log_since(mark)[-2000:]
    assert "bad-key-1" not in Env.server.log()


@test
def failing_backend_circuit_opens():
    mark = len(Env.server.log())
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("down", U("name=circ+status=503")), backend("up", U("name=circ-ok"))]}})
    Env.up.reset()
    for _ in range(10):
        r = chat(Env.port(), "m")
        assert r.status == 200 and served_by(r) == "circ-ok", r.body
    assert len(requests_for("name=circ+")) == 3, "the failing backend was tried %d times" % len(
        requests_for("name=circ+"))
    assert wait_for(lambda: "down:circuit_open" in log_since(mark), 3)


@test
def everything_cooling_tries_soonest_then_429():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("slow", U("name=cool-a+status=429+ra=40")),
        backend("soon", U("name=cool-b+status=429+ra=6"))]}})
    Env.up.reset()
    r = chat(Env.port(), "m")
    assert r.status == 429 and r.headers["retry-after"] == ["6"], (r.status, r.headers)
    # both keys cool now: the next request still tries the soonest instead of refusing
    r = chat(Env.port(), "m")
    assert r.status == 429, r.status
    ra = int(r.headers["retry-after"][0])
    assert 1 <= ra <= 6, ra
    assert len(requests_for("name=cool-b")) == 2 and len(requests_for("name=cool-a")) == 1, \
        [e["spec"] for e in Env.up.requests()]


@test
def retry_after_forms():
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 8))
    cases = [("ra=12", 12, 12), ("ra=" + date.replace(" ", "%20"), 6, 9),
             ("", 10, 16), ("ra=99999999", 3600, 3600), ("ra=-5", 10, 16), ("ra=soon", 10, 16)]
    for i, (ra, lo, hi) in enumerate(cases):
        spec = "name=raf%d+status=429%s" % (i, "+" + ra if ra else "")
        Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U(spec))]}})
        r = chat(Env.port(), "m")
        assert r.status == 429, (ra, r.status)
        got = int(r.headers["retry-after"][0])
        assert lo <= got <= hi, (ra, got)


@test
def client_error_passes_through_without_cooldown():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=ctx+status=400+code=context_length_exceeded")),
        backend("b", U("name=ctx-b"))]}})
    Env.up.reset()
    for _ in range(5):
        r = chat(Env.port(), "m")
        assert r.status == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.body
    assert len(requests_for("name=ctx+")) == 5, "a client error cooled the backend"
    assert not requests_for("name=ctx-b"), "a client error was retried elsewhere"


@test
def upstream_rejection_is_502_not_401():
    for st in (401, 403):
        Env.routing({"m": {"Strategy": "Failover", "Backends": [
            backend("a", U("name=auth%d+status=%d" % (st, st)))]}})
        r = chat(Env.port(), "m")
        assert r.status == 502, (st, r.status)
        assert "key-a" not in r.body.decode()


@test
def dns_and_tls_failures_fail_over():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("dns", "http://nonexistent.invalid/v1"),
        backend("tls", "https://127.0.0.1:%d/name=tls/v1" % Env.up.port),
        backend("good", U("name=dnstls-good"))]}})
    mark = len(Env.server.log())
    r = chat(Env.port(), "m")
    assert r.status == 200 and served_by(r) == "dnstls-good", r.body
    assert wait_for(lambda: "dns#0:dns_error" in log_since(mark) and "tls#0:tls_error" in log_since(mark), 2), \
        log_since(mark)[-1500:]


@test
def overall_deadline_bounds_all_attempts():
    # the shared server runs with LLMPROXY_DEADLINE_MS=4000
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("h1", U("name=dl1+hang=1"), timeout=3), backend("h2", U("name=dl2+hang=1"), timeout=3),
        backend("h3", U("name=dl3+hang=1"), timeout=3)]}})
    t = time.time()
    r = chat(Env.port(), "m")
    took = time.time() - t
    assert r.status == 504, r.status
    assert 3.8 < took < 5.0, "took %.2f s (3 x 3 s would be 9 s)" % took


@test
def idle_stream_ends_with_error_event():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=idle+chunks=5+gap=3000"), timeout=1)]}})
    t = time.time()
    r = chat(Env.port(), "m", stream=True)
    took = time.time() - t
    ev = r.events()
    assert r.status == 200 and len(ev) == 2 and "[DONE]" not in ev, ev
    assert "error" in json.loads(ev[1]), ev
    assert took < 2.5, took


@test
def endless_stream_is_capped():
    # the shared server runs with LLMPROXY_MAX_RESPONSE_BYTES=4194304
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=endless-cap+endless=1"))]}})
    r = chat(Env.port(), "m", stream=True, timeout=60)
    ev = r.events()
    assert 3_500_000 < len(r.body) <= 4_194_304 + 2000, len(r.body)
    assert "too large" in ev[-1] or "response_too_large" in ev[-1], ev[-1][:300]
    assert wait_for(lambda: all("ended" in e for e in requests_for("name=endless-cap")), 3)


@test
def megabyte_event_and_bytewise_stream_arrive_intact():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=big+bigevent=1048576"))]}})
    r = chat(Env.port(), "m", stream=True)
    ev = r.events()
    assert len(ev) == 2 and len(json.loads(ev[0])["choices"][0]["delta"]["content"]) == 1048576
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=bw+bytewise=1"))]}})
    r = chat(Env.port(), "m", stream=True)
    want = (b': hi\r\n\r\ndata: {"i": 0, "backend": "bw"}\r\n\r\n'
            b'data: {"i": 1}\n\ndata: [DONE]\n\n')
    assert r.body == want, r.body


@test
def html_and_empty_success_fail_over():
    for bad in ("html=1", "empty=1"):
        Env.routing({"m": {"Strategy": "Failover", "Backends": [
            backend("bad", U("name=hb-" + bad.replace("=", "") + "+" + bad)),
            backend("good", U("name=hb-good"))]}})
        r = chat(Env.port(), "m")
        assert r.status == 200 and served_by(r) == "hb-good", (bad, r.body[:200])


@test
def hostile_client_bodies():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=hostile"))]}})
    p = Env.port()
    deep = '{"model":"m","x":' + "[" * 10000 + "]" * 10000 + "}"
    s, _, b = request(p, "POST", "/v1/chat/completions", deep)
    assert s == 400 and b"deeply" in b, (s, b[:200])
    # invalid UTF-8 and lone surrogates are the upstream's business: passed unchanged
    Env.up.reset()
    raw = b'{"model":"m","messages":[{"role":"user","content":"\xff\xfe bad \\ud800 lone"}]}'
    r = fetch(p, "POST", "/v1/chat/completions", raw)
    assert r.status == 200, r.status
    assert "\ufffd\ufffd bad \\ud800 lone" in requests_for("name=hostile")[-1]["body"]
    s, _, b = request(p, "POST", "/v1/chat/completions", '{"model":"m\\u0000x"}')
    assert s == 400, s
    r = fetch(p, "POST", "/v1/chat/completions", '{"model":"m","c":"nul \\u0000 inside"}')
    assert r.status == 200, r.status
    for model in ("../etc/passwd", "%2e%2e/m", "m/../m", "..", "x" * 255):
        s, _, b = request(p, "POST", "/v1/chat/completions", json.dumps({"model": model}))
        assert s == 404 and json.loads(b)["error"]["code"] == "model_not_found", (model, s)
    s, _, b = request(p, "POST", "/v1/chat/completions", json.dumps({"model": "x" * 10240}))
    assert s == 400, s
    # no or a wrong Content-Type: the body is JSON all the same, and upstream is told so
    for ctype in (None, "text/plain"):
        Env.up.reset()
        sock = socket.create_connection(("127.0.0.1", p), timeout=10)
        body = b'{"model":"m"}'
        head = ("POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                "Content-Length: %d\r\n" % len(body))
        if ctype:
            head += "Content-Type: %s\r\n" % ctype
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while True:
            d = sock.recv(65536)
            if not d:
                break
            data += d
        sock.close()
        assert data.split(b" ", 2)[1] == b"200", data[:100]
        assert requests_for("name=hostile")[-1]["headers"]["content-type"] == "application/json"
    # a Content-Length shorter than the body: the cut body is not JSON
    body = b'{"model":"m","messages":[]}'
    sock = socket.create_connection(("127.0.0.1", p), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 10\r\n\r\n" + body)
    data = sock.recv(65536)
    sock.close()
    assert data.split(b" ", 2)[1] == b"400", data[:100]
    if Env.server.name == "apache":
        return  # Apache waits for the announced body before it answers (its Timeout)
    # a Content-Length far over the cap is refused before any body is read
    sock = socket.create_connection(("127.0.0.1", p), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 999999999\r\n\r\n{")
    data = sock.recv(65536)
    sock.close()
    assert data.split(b" ", 2)[1] == b"413", data[:100]


@test
def huge_headers_do_not_hurt():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=hh"))]}})
    r = chat(Env.port(), "m", headers={"X-Huge": "a" * 60000, "Proxy": "http://127.0.0.1:9"})
    assert r.status in (200, 400, 413, 431), r.status
    assert request(Env.port(), "GET", "/health")[0] == 200
    r = chat(Env.port(), "m", headers={"Proxy": "http://127.0.0.1:9"})
    assert r.status == 200, "a Proxy: header must not send the upstream request elsewhere"
