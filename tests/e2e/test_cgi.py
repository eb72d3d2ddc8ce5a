"""The same responder as a plain CGI program under lighttpd's mod_cgi (a process per request)."""

import atexit
import json
import os
import re
import time

from harness import LighttpdCgi, backend, chat, open_request, request
from test_proxy import Env, U, requests_for, served_by, test, wait_for


class Cgi:
    server = None


def cgi_port():
    if Cgi.server is None:
        Cgi.server = LighttpdCgi(Env.server.binary).start({})
        # stopped by cgi_stop_and_sanitizers, or at exit when a filtered run
        # (E2E_ONLY) leaves that test out
        atexit.register(lambda s=Cgi.server: s.proc is not None and s.stop())
    return Cgi.server.port


def routing(models):
    from harness import write_routing
    cgi_port()
    write_routing(Cgi.server.routing, models)


@test(servers=("lighttpd",))
def cgi_basics_and_failover():
    routing({"m": {"Strategy": "Failover", "Backends": [
        backend("bad", U("name=cgi-bad+status=503")), backend("good", U("name=cgi-good"))]}})
    p = cgi_port()
    s, h, b = request(p, "GET", "/health")
    assert s == 200 and json.loads(b) == {"Status": "Healthy"}, (s, b)
    s, h, b = request(p, "GET", "/v1/models")
    assert s == 200 and [m["id"] for m in json.loads(b)["data"]] == ["m"], b
    r = chat(p, "m")
    assert r.status == 200 and served_by(r) == "cgi-good", r.body
    s, h, b = request(p, "POST", "/v1/chat/completions", "{nope")
    assert s == 400 and "error" in json.loads(b)


@test(servers=("lighttpd",))
def cgi_rotation_and_cooldowns_shared_across_processes():
    routing({"rr": {"Strategy": "RoundRobin", "Backends": [
        backend("a", U("name=cgi-rr-a")), backend("b", U("name=cgi-rr-b"))]},
        "k": {"Strategy": "Failover", "Backends": [
            backend("k", U("name=cgi-rl+status=429+ra=30+onlykey=ck-1"), keys=["ck-1", "ck-2"])]}})
    p = cgi_port()
    seq = [served_by(chat(p, "rr")) for _ in range(8)]
    assert seq in (["cgi-rr-a", "cgi-rr-b"] * 4, ["cgi-rr-b", "cgi-rr-a"] * 4), seq
    Env.up.reset()
    for _ in range(4):
        assert chat(p, "k").status == 200
    keys = [e["headers"]["authorization"] for e in requests_for("name=cgi-rl")]
    assert keys.count("Bearer ck-1") == 1, keys  # cooled by one process, skipped by the next


@test(servers=("lighttpd",))
def cgi_streams_unbuffered():
    routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=cgi-t+chunks=4+gap=300"))]}})
    r = chat(cgi_port(), "m", stream=True)
    lat = []
    for t_arr, data in r.chunks:
        for m in re.finditer(rb'"t": ([0-9.]+)', data):
            lat.append(t_arr - float(m.group(1)))
    assert len(lat) == 4 and max(lat) < 0.1, lat
    assert r.events()[-1] == "[DONE]"


@test(servers=("lighttpd",))
def cgi_client_gone_aborts_upstream():
    routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=cgi-endless+endless=1+gap=100"))]}})
    Env.up.reset()
    p = cgi_port()
    sock = open_request(p, "POST", "/v1/chat/completions", {"model": "m", "stream": True})
    data = b""
    while b"data:" not in data:
        data += sock.recv(4096)
    t_close = time.time()
    sock.close()
    assert wait_for(lambda: all("ended" in e for e in requests_for("name=cgi-endless")), 3)
    assert requests_for("name=cgi-endless")[0]["ended"] - t_close < 1.0
    assert wait_for(lambda: "status=499" in Cgi.server.log(), 3), Cgi.server.log()[-1000:]


@test(servers=("lighttpd",))
def cgi_ignores_proxy_header():
    routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=cgi-proxy"))]}})
    r = chat(cgi_port(), "m", headers={"Proxy": "http://127.0.0.1:9"})
    assert r.status == 200 and served_by(r) == "cgi-proxy", (r.status, r.body[:200])


@test(servers=("lighttpd",))
def cgi_admin_page_and_api():
    """The admin program as CGI under lighttpd's mod_cgi: the page, the token made on
    the first visit, the API."""
    p = cgi_port()
    s, h, b = request(p, "GET", "/admin")
    assert s == 200 and b"<title>llmproxy admin</title>" in b, (s, b[:200])
    assert h["x-frame-options"] == ["DENY"], h
    s, _, b = request(p, "GET", "/admin/config", None, {"Authorization": "Bearer nope"})
    assert s == 401 and b"admin.token" in b, (s, b[:300])
    tok = open(os.path.join(Cgi.server.state, "admin.token")).read().strip()
    routing({"cgiadm": {"Strategy": "Failover", "Backends": [backend("a", U("name=cgiadm"))]}})
    s, _, b = request(p, "GET", "/admin/config", None, {"Authorization": "Bearer " + tok})
    assert s == 200 and "cgiadm" in json.loads(b)["Models"], (s, b[:300])


@test(servers=("lighttpd",))
def cgi_keys_limits_budgets_and_usage():
    """Client keys under mod_cgi, where every request is its own process: the
    limits and the budget hold across them, and each process's usage reaches
    usage.db when it exits."""
    p = cgi_port()
    request(p, "GET", "/admin/keys", None, {"Authorization": "Bearer nope"})  # makes the token
    adm = {"Authorization": "Bearer " + open(os.path.join(Cgi.server.state, "admin.token")).read().strip(),
           "Content-Type": "application/json"}
    routing({"ck": {"Strategy": "Failover", "Backends": [backend("a", U("name=cgi-keys+ptok=10+ctok=20"))]}})
    s, _, b = request(p, "POST", "/admin/keys", json.dumps({"Name": "cgi-rpm", "Rpm": 3}), adm)
    assert s == 201, (s, b)
    rpm = json.loads(b)
    s, _, b = request(p, "POST", "/admin/keys", json.dumps({"Name": "cgi-budget", "BudgetTokens": 60}), adm)
    assert s == 201, (s, b)
    bud = json.loads(b)
    try:
        r = chat(p, "ck")
        assert r.status == 401 and r.json()["error"]["code"] == "invalid_api_key", r.body
        got = [chat(p, "ck", headers={"Authorization": "Bearer " + rpm["Key"]}) for _ in range(4)]
        assert [x.status for x in got] == [200, 200, 200, 429], [x.status for x in got]
        assert got[3].json()["error"]["code"] == "rate_limit_exceeded" and int(got[3].headers["retry-after"][0]) >= 1
        assert got[0].headers["x-ratelimit-limit-requests"] == ["3"], got[0].headers
        bk = {"Authorization": "Bearer " + bud["Key"]}
        assert chat(p, "ck", headers=bk).status == 200
        r = chat(p, "ck", headers=bk, stream=True)
        assert r.status == 200 and r.events()[-1] == "[DONE]", r.body
        r = chat(p, "ck", headers=bk)
        assert r.status == 429 and r.json()["error"]["code"] == "insufficient_quota", r.body

        def rows():
            s, _, b = request(p, "GET", "/admin/usage?group_by=key", None, adm)
            return {x["Key"]: x for x in json.loads(b)["Usage"]} if s == 200 else {}
        assert wait_for(lambda: rows().get("cgi-budget", {}).get("Requests") == 2 and
                        rows().get("cgi-rpm", {}).get("Requests") == 3, 3), rows()
        assert rows()["cgi-budget"]["PromptTokens"] == 20 and rows()["cgi-budget"]["CompletionTokens"] == 40
        # every CGI process adds to the same counters: /metrics sums them
        s, _, b = request(p, "GET", "/metrics", None, adm)
        assert s == 200, (s, b[:300])
        text = b.decode()
        assert 'llmproxy_requests_total{model="ck",status="200"} 5\n' in text, text[:2000]
        assert 'llmproxy_tokens_total{model="ck",backend="a",key="cgi-budget",type="prompt"} 20\n' in text
    finally:
        for k in (rpm, bud):
            request(p, "DELETE", "/admin/keys/" + k["Id"], None, adm)


@test(servers=("lighttpd",))
def cgi_responses_affinity_and_anthropic():
    """A process per request: a response made by one is found by the next (responses.state)."""
    keys = ["ck-a", "ck-b"]
    routing({"gpt": {"Strategy": "RoundRobin", "Backends": [
        backend("one", U("name=cgi-af-one"), keys=keys), backend("two", U("name=cgi-af-two"), keys=keys)]},
        "claude": {"Strategy": "Failover", "Backends": [
            dict(backend("a", U("name=cgi-ant")), Api="anthropic")]}})
    p = cgi_port()
    for i in range(4):
        s, h, b = request(p, "POST", "/v1/responses", {"model": "gpt", "input": "hi %d" % i})
        assert s == 200, b
        rid = json.loads(b)["id"]
        s, h, b = request(p, "GET", "/v1/responses/" + rid)
        assert s == 200 and json.loads(b)["id"] == rid, (s, b)
        s, h, b = request(p, "POST", "/v1/responses", {"model": "gpt", "input": "more",
                                                       "previous_response_id": rid})
        assert s == 200 and json.loads(b)["previous_response_id"] == rid, (s, b)
    s, h, b = request(p, "GET", "/v1/responses/resp_unknown")
    assert s == 404 and json.loads(b)["error"]["code"] == "response_not_found", b
    s, h, b = request(p, "POST", "/v1/messages", {"model": "claude", "max_tokens": 5, "messages": []})
    assert s == 200 and json.loads(b)["type"] == "message", b
    s, h, b = request(p, "POST", "/v1/messages", {"max_tokens": 5, "messages": []})
    assert s == 400 and json.loads(b)["type"] == "error", b


@test(servers=("lighttpd",))
def cgi_broken_answers_are_not_passed_off_as_whole():
    """Under mod_cgi (a pipe: no reset) a backend that breaks off mid-answer gives
    the next backend's answer, or a clear error: never a cut JSON that lighttpd
    ends as if whole."""
    from test_hosted import broken_answers_under_cgi, cgi_broken_models
    routing(cgi_broken_models())
    broken_answers_under_cgi(cgi_port())


@test(servers=("lighttpd",))
def cgi_stop_and_sanitizers():
    if Cgi.server is None:
        return
    Cgi.server.stop()
    reports = Cgi.server.sanitizer_reports()
    Cgi.server = None
    assert not reports, "\n".join(reports)[-3000:]

