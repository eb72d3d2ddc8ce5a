"""Smoke set under Apache running the programs itself: mod_fcgid, and plain CGI
routed by the shared-hosting .htaccess (etc/apache/htaccess)."""

import json
import os
import re
import signal
import subprocess
import threading
import time

from harness import ApacheHosted, backend, chat, fetch, raw_post, request
from test_proxy import Env, U, served_by, test, wait_for


def assert_clean(srv):
    """The programs a stopped server ran left no sanitizer report."""
    reports = srv.sanitizer_reports()
    assert not reports, "\n".join(reports)[-3000:]


def smoke(mode):
    srv = ApacheHosted(Env.server.binary, mode)
    srv.start({})
    try:
        srv.write_routing({"m": {"Strategy": "Failover", "Backends": [
            backend("bad", U("name=%s-bad+status=502" % mode)),
            backend("good", U("name=%s-good" % mode))]},
            "s": {"Strategy": "Failover", "Backends": [
                backend("a", U("name=%s-s+chunks=4+gap=300" % mode))]}})
        p = srv.port
        s, _, b = request(p, "GET", "/health")
        assert s == 200 and json.loads(b) == {"Status": "Healthy"}, (s, b)
        r = chat(p, "m")
        assert r.status == 200 and served_by(r) == "%s-good" % mode, (r.status, r.body[:300])
        r = chat(p, "s", stream=True)
        lat = []
        for t_arr, data in r.chunks:
            for m in re.finditer(rb'"t": ([0-9.]+)', data):
                lat.append(t_arr - float(m.group(1)))
        assert len(lat) == 4 and max(lat) < 0.1, "stream buffered: %s" % lat
        assert r.events()[-1] == "[DONE]"
        # the admin program creates its token at its first start
        r = fetch(p, "GET", "/admin/config", None, {"Authorization": "Bearer wrong"})
        assert r.status == 401, r.status
        with open(os.path.join(srv.state, "admin.token")) as f:
            tok = f.read().strip()
        r = fetch(p, "GET", "/admin/config", None, {"Authorization": "Bearer " + tok})
        assert r.status == 200 and "m" in r.json()["Models"], (r.status, r.body[:300])
        s, _, b = request(p, "GET", "/admin")
        assert s == 200 and b"llmproxy admin" in b, s
    finally:
        srv.stop()
    assert_clean(srv)


@test(servers=("apache",))
def apache_fcgid_smoke():
    smoke("fcgid")


@test(servers=("apache",))
def apache_cgi_htaccess_smoke():
    smoke("cgi")


def hosted(mode="cgi", env=None, models=None, state_env=True):
    srv = ApacheHosted(Env.server.binary, mode, env=env, state_env=state_env)
    srv.start({})
    srv.write_routing(models or {"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=hosted"))]}})
    return srv


def broken_answers_under_cgi(port):
    """What a client of a CGI setup sees of backends that break off mid-answer
    (the web server cannot be told the answer is cut: a pipe or a Unix socket
    carries no reset)."""
    def post(model, stream):
        return raw_post(port, "/v1/chat/completions",
                        {"model": model, "stream": stream, "messages": []})
    # a plain answer is held whole: the break is a failed attempt, the next
    # backend answers
    r = chat(port, "cutthengood")
    assert r.status == 200 and served_by(r) == "cgi-good", (r.status, r.body[:300])
    # with no other backend: a clear error, not a truncated JSON ended as whole
    data = post("cut", False)
    assert data.startswith(b"HTTP/1.1 502"), data[:300]
    assert b'"choices"' not in data and b"all_backends_failed" in data, data[-300:]
    # a stream that breaks ends with an error event, never [DONE]
    data = post("drop", True)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert b"[DONE]" not in data and b'"error"' in data, data[-400:]
    # an answer relayed as it is (a client's error, a response's follow-up) has
    # nowhere else to go (the healthy second backend is never asked): it is held
    # whole too, and a break is a clear 502
    r = chat(port, "bad")
    assert r.status == 400 and r.json()["error"]["code"] == "fake_400", (r.status, r.body[:300])
    r = chat(port, "badcut")
    assert r.status == 502 and r.json()["error"]["code"] == "upstream_broken", \
        (r.status, r.body[:300])
    # one whose backend falls silent in it: a timeout once TimeoutSeconds (1 s)
    # is out, long before the backend would break off (10 s)
    t0 = time.time()
    r = chat(port, "badstall")
    assert r.status == 504 and r.json()["error"]["code"] == "upstream_timeout", \
        (r.status, r.body[:300])
    assert time.time() - t0 < 6, time.time() - t0
    r = fetch(port, "POST", "/v1/responses", {"model": "pin", "input": "hi"})
    assert r.status == 200 and r.json()["backend"] == "cgi-pin", (r.status, r.body[:300])
    rid = r.json()["id"]
    for method, path, body in (("POST", "/v1/responses",
                                {"model": "pin", "input": "more", "previous_response_id": rid}),
                               ("GET", "/v1/responses/" + rid, None)):
        r = fetch(port, method, path, body)
        assert r.status == 502 and r.json()["error"]["code"] == "upstream_broken", \
            (method, r.status, r.body[:300])
    r = fetch(port, "DELETE", "/v1/responses/" + rid)
    assert r.status == 200 and r.json()["deleted"] is True, (r.status, r.body[:300])


def cgi_broken_models():
    good = backend("good", U("name=cgi-good"))
    return {"cutthengood": {"Strategy": "Failover", "Backends": [
                backend("cut", U("name=cgi-cut+cut=1")), backend("good", U("name=cgi-good"))]},
            "cut": {"Strategy": "Failover", "Backends": [backend("a", U("name=cgi-cut+cut=1"))]},
            "drop": {"Strategy": "Failover", "Backends": [
                backend("a", U("name=cgi-drop+chunks=5+drop=2"))]},
            "bad": {"Strategy": "Failover", "Backends": [
                backend("a", U("name=cgi-bad+status=400")), good]},
            "badcut": {"Strategy": "Failover", "Backends": [
                backend("a", U("name=cgi-badcut+status=400+cut=1")), good]},
            "badstall": {"Strategy": "Failover", "Backends": [
                backend("a", U("name=cgi-badstall+status=400+cut=1+stall=10000"), timeout=1),
                good]},
            "pin": {"Strategy": "Failover", "Backends": [backend("a", U("name=cgi-pin+cut=1"))]}}


@test(servers=("apache",))
def cgi_broken_answers_are_not_passed_off_as_whole():
    """Under mod_cgid a backend that breaks off mid-answer gives the next backend's
    answer, or a clear error: never a cut JSON that Apache ends as if whole."""
    srv = hosted(models=cgi_broken_models())
    try:
        broken_answers_under_cgi(srv.port)
    finally:
        srv.stop()
    assert_clean(srv)


@test(servers=("apache",))
def cgi_answer_over_the_cap_is_a_clean_error():
    """Under CGI a plain answer larger than LLMPROXY_MAX_RESPONSE_BYTES is refused
    while still held: a clear 502, not the first 4 KiB ended as if whole."""
    srv = hosted(env={"LLMPROXY_MAX_RESPONSE_BYTES": "4096"},
                 models={"m": {"Strategy": "Failover", "Backends": [
                     backend("a", U("name=cgi-huge+big=20000"))]},
                         "small": {"Strategy": "Failover", "Backends": [
                             backend("a", U("name=cgi-small"))]}})
    try:
        r = chat(srv.port, "m")
        assert r.status == 502 and b"all_backends_failed" in r.body, (r.status, r.body[:300])
        r = chat(srv.port, "small")
        assert r.status == 200 and served_by(r) == "cgi-small", (r.status, r.body[:300])
    finally:
        srv.stop()
    assert_clean(srv)


@test(servers=("apache",))
def cgi_early_answers_survive_unread_bodies():
    """Under Apache CGI stdin and stdout are one socket: an answer given before the
    body is read (405, 401, 403, 404) still reaches the client whole, every time."""
    srv = hosted()
    try:
        tok = None
        r = fetch(srv.port, "GET", "/admin/config", None, {"Authorization": "Bearer x"})
        assert r.status == 401, r.status  # the admin program made its token
        tok = open(os.path.join(srv.state, "admin.token")).read().strip()
        body = json.dumps({"a": "x" * 3000})
        cases = [
            ("/health", {}, 405),
            ("/admin/config/x", {}, 401),
            ("/admin/config/x", {"Authorization": "Bearer " + tok,
                                 "Origin": "http://evil.example"}, 403),
            ("/v1/nothing", {}, 404),
        ]
        for i in range(15):
            for path, hdrs, want in cases:
                r = fetch(srv.port, "POST", path, body, hdrs, timeout=15)
                assert r.status == want, (i, path, r.status, r.body[:200])
                assert "error" in r.json(), (path, r.body[:200])
        log = srv.log()
        assert "AH00574" not in log and "reset by peer" not in log, log[-2000:]
    finally:
        srv.stop()


@test(servers=("apache",))
def cgi_admin_page_keeps_its_protection():
    """Through the shipped .htaccess the admin page comes with its CSP and may not be framed."""
    srv = hosted()
    try:
        s, h, b = request(srv.port, "GET", "/admin")
        assert s == 200 and b"<title>llmproxy admin</title>" in b, s
        assert "frame-ancestors 'none'" in h["content-security-policy"][0], h
        assert h["x-frame-options"] == ["DENY"], h
        assert b"admin.token" in b, "the page tells where the token is"
    finally:
        srv.stop()


@test(servers=("apache",))
def cgi_sigterm_drains_the_stream():
    """SIGTERM to a CGI process serving a stream: the stream ends with the shutdown
    error event after LLMPROXY_DRAIN_MS, and the request is logged."""
    srv = hosted(env={"LLMPROXY_DRAIN_MS": "500"}, models={"s": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=cgi-term+chunks=200+gap=100"))]}})
    try:
        out = {}
        t = threading.Thread(target=lambda: out.update(r=chat(srv.port, "s", stream=True, timeout=30)))
        t.start()
        pids = []
        end = time.time() + 5
        while time.time() < end and not pids:
            ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
            pids = []
            for line in ps.splitlines():
                pid, args = line.split(None, 1)
                try:  # a CGI program runs in its own directory, here under srv.home
                    here = os.path.realpath("/proc/%s/cwd" % pid)
                except OSError:
                    continue
                if args.split()[0].endswith("llmproxy.fcgi") and here.startswith(srv.home):
                    pids.append(int(pid))
            time.sleep(0.1)
        assert pids, "no CGI process found"
        time.sleep(0.5)
        os.kill(pids[0], signal.SIGTERM)
        t.join(10)
        ev = out["r"].events()
        assert ev and "[DONE]" not in ev, ev[-2:]
        assert json.loads(ev[-1])["error"]["code"] == "server_shutting_down", ev[-2:]
        assert wait_for(lambda: re.search(r"model=s .*a#0:shutdown", srv.log()) is not None, 3), \
            srv.log()[-1500:]
    finally:
        srv.stop()


@test(servers=("apache",))
def cgi_finds_its_state_without_setenv():
    """suEXEC drops SetEnv's variables: with no LLMPROXY_STATE_DIR at all, the
    programs find llmproxy-state next to public_html (the INSTALL layout)."""
    srv = hosted(state_env=False)
    try:
        r = chat(srv.port, "m")
        assert r.status == 200 and served_by(r) == "hosted", (r.status, r.body[:300])
        r = fetch(srv.port, "GET", "/admin/config", None, {"Authorization": "Bearer x"})
        assert r.status == 401, r.status
        tok = open(os.path.join(srv.state, "admin.token")).read().strip()
        r = fetch(srv.port, "GET", "/admin/config", None, {"Authorization": "Bearer " + tok})
        assert r.status == 200 and "m" in r.json()["Models"], (r.status, r.body[:300])
    finally:
        srv.stop()
