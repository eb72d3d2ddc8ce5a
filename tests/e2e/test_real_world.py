"""What real deployments meet: private directories, slow and stalled clients,
trickling bodies, SIGTERM with requests in flight, big bodies, trailers,
per-model circuits and backends that die after reading the request."""

import json
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time

from harness import ROOT, backend, chat, fetch, open_request, raw_post, request, write_routing
from test_proxy import Env, U, log_mark, requests_for, run_parallel, served_by, test, wait_for


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def log_since(srv, mark):
    return srv.log()[mark:]


# ---------------------------------------------------------------- anywhere

@test
def serves_from_private_dirs_with_spaces():
    """The checkout and the state dir inside 0700 directories, paths with spaces:
    everything works, through the web server's own (unprivileged) workers."""
    base = tempfile.mkdtemp(prefix="llmproxy-private-")
    os.chmod(base, 0o700)
    co = os.path.join(base, "my check out")
    for d in ("scripts", "etc", "htdocs"):
        shutil.copytree(os.path.join(ROOT, d), os.path.join(co, d))
    os.makedirs(os.path.join(co, "cgi-bin"))
    bindir = os.path.dirname(Env.server.binary)
    for prog in ("llmproxy.fcgi", "llmproxy-admin.fcgi"):
        shutil.copy(os.path.join(bindir, prog), os.path.join(co, "cgi-bin", prog))
    # (sanitizer options cannot hold a path with spaces)
    san = {"ASAN_OPTIONS": "abort_on_error=0:detect_leaks=0:log_path=%s/asan" % base,
           "UBSAN_OPTIONS": "print_stacktrace=1:log_path=%s/ubsan" % base}
    srv = Env.server_class(os.path.join(co, "cgi-bin", "llmproxy.fcgi"), env=san)
    srv.root = co
    srv.state = os.path.join(base, "state dir")
    os.makedirs(srv.state)
    os.chmod(srv.state, 0o700)
    srv.routing = os.path.join(srv.state, "dynamic_routing.json")
    srv.errorlog = os.path.join(base, "error.log")
    srv.start({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=private"))]}})
    try:
        r = chat(srv.port, "m")
        assert r.status == 200 and served_by(r) == "private", (r.status, r.body[:300])
        r = chat(srv.port, "m", stream=True)
        assert r.status == 200 and r.events()[-1] == "[DONE]", r.body[:300]
        s, h, b = request(srv.port, "GET", "/admin")
        assert s == 200 and b"<title>llmproxy admin</title>" in b, (s, b[:200])
        assert "frame-ancestors 'none'" in h["content-security-policy"][0], h
        assert h["x-frame-options"] == ["DENY"], h
        assert fetch(srv.port, "GET", "/admin/config", None,
                     {"Authorization": "Bearer x"}).status == 401
        tok = open(os.path.join(srv.state, "admin.token")).read().strip()
        r = fetch(srv.port, "GET", "/admin/config", None, {"Authorization": "Bearer " + tok})
        assert r.status == 200 and "m" in r.json()["Models"], (r.status, r.body[:300])
        assert stat.S_IMODE(os.stat(srv.state).st_mode) == 0o700, "the state dir stays 0700"
        if srv.name == "apache":
            run = open(os.path.join(srv.state, "apache", "run-dir")).read().strip()
            for p in (run, os.path.join(run, "llmproxy.sock"), os.path.join(run, "admin.sock")):
                mode = stat.S_IMODE(os.stat(p).st_mode)
                assert mode & 0o007 == 0, "%s is open to everyone (%o)" % (p, mode)
    finally:
        srv.stop()
    import glob
    reports = [open(p, errors="replace").read() for p in glob.glob(os.path.join(base, "*san*"))]
    assert not reports and not srv.sanitizer_reports(), "\n".join(reports)[-3000:]
    shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- slow peers

@test
def stalled_client_hurts_nobody():
    """One client stops reading a fast 20 MB stream: ten other streams and ten plain
    requests finish on time, the backend is paused rather than buffered, and the
    responder's memory grows by a bounded amount."""
    # its own server: the shared one caps answers at 4 MiB
    srv = Env.server_class(Env.server.binary)
    srv.start({
        "fat": {"Strategy": "Failover", "Backends": [backend("f", U("name=fat+chunks=2000+fat=10"))]},
        "s": {"Strategy": "Failover", "Backends": [backend("s", U("name=slowpeer-s+chunks=10+gap=50"))]},
        "q": {"Strategy": "Failover", "Backends": [backend("q", U("name=slowpeer-q"))]},
    })
    # warm: what the first requests cost once (the usage store, thread caches) is
    # not the stalled stream's
    run_parallel(20, lambda i: chat(srv.port, "s" if i < 10 else "q", stream=i < 10, timeout=30))
    Env.up.reset()
    pids = srv.responder_pids()
    before = sum(rss_kib(p) for p in pids)
    stalled = open_request(srv.port, "POST", "/v1/chat/completions",
                           {"model": "fat", "stream": True, "messages": []})
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    head = b""
    while b"\r\n\r\n" not in head:
        head += stalled.recv(4096)
    try:
        time.sleep(1.0)  # the stream fills every buffer on its way and stops
        t0 = time.time()
        results = run_parallel(20, lambda i: chat(srv.port, "s" if i < 10 else "q",
                                                  stream=i < 10, timeout=30))
        took = time.time() - t0
        for i, r in enumerate(results):
            assert r.status == 200, (i, r.status, r.body[:200])
            if i < 10:
                assert r.events()[-1] == "[DONE]" and len(r.events()) == 11, r.body[:300]
        # ten streams of 10 chunks 50 ms apart take 0.5 s; on a busy 2-core box allow 6x
        assert took < 3.0, "the other requests took %.2f s" % took
        fat = requests_for("name=fat")
        assert len(fat) == 1 and "ended" not in fat[0], "the stalled stream's backend was not paused"
        grown = sum(rss_kib(p) for p in pids) - before
        print("        measured: stalled 20 MB stream, responders grew %d KiB; others took %.2f s"
              % (grown, took), flush=True)
        assert grown < 16 * 1024, "responder memory grew %d KiB for a stalled stream" % grown
        stalled.close()
        assert wait_for(lambda: "ended" in requests_for("name=fat")[0], 5), \
            "the backend transfer did not stop when the stalled client left"
    finally:
        stalled.close()
        srv.stop()
    assert not srv.sanitizer_reports(), "\n".join(srv.sanitizer_reports())[-3000:]


@test
def trickling_bodies_hold_nothing():
    """Clients that send their body a byte at a time hold no thread: other requests
    are answered at once, and the trickler gets 408 once the body stalls."""
    Env.routing({"q": {"Strategy": "Failover", "Backends": [backend("q", U("name=trickle-q"))]}})
    socks = []
    mark = len(Env.server.log())
    try:
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", Env.port()), timeout=30)
            s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mo")
            socks.append(s)
        time.sleep(0.3)
        for _ in range(5):
            t0 = time.time()
            r = chat(Env.port(), "q", timeout=10)
            assert r.status == 200 and time.time() - t0 < 1.0, (r.status, time.time() - t0)
        if Env.server.name == "apache":
            # Apache streams bodies to us as they come: our body timeout (2 s in
            # this suite) ends each request; nothing of ours waits on them
            assert wait_for(lambda: log_since(Env.server, mark).count("status=408") >= 12, 8), \
                log_since(Env.server, mark)[-2000:]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------- lifecycle

@test
def sigterm_drains_requests_in_flight():
    """SIGTERM to the responder: it stops taking requests, lets one in flight finish,
    ends a stream still open after LLMPROXY_DRAIN_MS with the error event, logs both,
    and exits."""
    srv = Env.server_class(Env.server.binary, procs=1, env={"LLMPROXY_DRAIN_MS": "1500"})
    srv.start({"slow": {"Strategy": "Failover", "Backends": [backend("a", U("name=drain-slow+delay=600"))]},
               "long": {"Strategy": "Failover", "Backends": [backend("b", U("name=drain-long+chunks=100+gap=100"))]}})
    try:
        pid = srv.responder_pids()[0]
        out = {}

        def slow():
            out["slow"] = chat(srv.port, "slow", timeout=20)

        def stream():
            out["long"] = chat(srv.port, "long", stream=True, timeout=20)
        ts = [threading.Thread(target=slow), threading.Thread(target=stream)]
        for t in ts:
            t.start()
        assert wait_for(lambda: len(requests_for("name=drain-")) == 2, 5)
        mark = len(srv.log())
        t_term = time.time()
        os.kill(pid, signal.SIGTERM)
        for t in ts:
            t.join(20)
        r = out["slow"]
        assert r.status == 200 and served_by(r) == "drain-slow", (r.status, r.body[:300])
        ev = out["long"].events()
        assert ev and "[DONE]" not in ev, ev[-3:]
        last = json.loads(ev[-1])
        assert last["error"]["code"] == "server_shutting_down", last
        assert 10 < len(ev) < 40, "the stream should run for the drain (1.5 s): %d events" % len(ev)
        assert wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                        open("/proc/%d/stat" % pid).read().split()[2] == "Z", 5), \
            "the responder did not exit after the drain"
        took = time.time() - t_term
        assert took < 6, took
        log = log_since(srv, mark)
        assert re.search(r"model=slow .*status=200", log), log[-2000:]
        assert re.search(r"model=long .*b#0:shutdown", log), log[-2000:]
    finally:
        srv.stop()
    assert not srv.sanitizer_reports(), "\n".join(srv.sanitizer_reports())[-3000:]


# ---------------------------------------------------------------- bodies and answers

@test(servers=("lighttpd",))
def sixteen_mib_body_costs_one_copy():
    """A 16 MiB body with a mapped model name: the backend gets it byte for byte
    (but the model), and the responder's peak memory grows by about the body."""
    from harness import Lighttpd
    binary = os.path.join(ROOT, "cgi-bin", "llmproxy.fcgi")  # release build: honest sizes
    srv = Lighttpd(binary, procs=1, env={"LLMPROXY_MAX_BODY_BYTES": str(17 << 20)})
    srv.start({"big": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=bigbody"), model="the-backend-name")]}})
    try:
        assert chat(srv.port, "big").status == 200  # warm
        pid = srv.responder_pids()[0]
        before = hwm_kib(pid)
        pad = "x" * (16 << 20)
        raw = '{"model":"big","pad":"%s","messages":[]}' % pad
        Env.up.reset()
        r = fetch(srv.port, "POST", "/v1/chat/completions", raw, timeout=60)
        assert r.status == 200, (r.status, r.body[:300])
        got = requests_for("name=bigbody")[-1]["body"]
        assert got == raw.replace('"big"', '"the-backend-name"', 1), "the body changed"
        grown = hwm_kib(pid) - before
        print("        measured: 16 MiB body, responder peak grew %d KiB" % grown, flush=True)
        assert grown < 24 * 1024, "peak memory grew %d KiB for a 16 MiB body" % grown
    finally:
        srv.stop()


@test
def trailers_do_not_make_a_second_answer():
    """A chunked answer with trailer fields: one status, one header block, the body intact."""
    Env.routing({"t4": {"Strategy": "Failover", "Backends": [backend("a", U("name=tr+status=400+trailer=1"))]},
                 "ts": {"Strategy": "Failover", "Backends": [backend("a", U("name=tr-s+chunks=3+trailer=1"))]}})
    r = chat(Env.port(), "t4")
    assert r.status == 400, (r.status, r.body[:300])
    assert b"Status:" not in r.body and b"X-LLMProxy-Request-Id" not in r.body, r.body
    assert r.json()["error"]["code"] == "fake_400", r.body
    r = chat(Env.port(), "ts", stream=True)
    ev = r.events()
    assert r.status == 200 and ev[-1] == "[DONE]" and len(ev) == 4, r.body[-300:]
    assert b"Status:" not in r.body and b"X-Checksum" not in r.body, r.body[-300:]


@test
def circuit_is_per_model_and_backend():
    """A backend that fails one model (5xx) opens that model's circuit only: another
    model at the same provider goes on being served there."""
    url = U("name=permodel+status=503+onlymodel=sick")
    Env.routing({"sick": {"Strategy": "Failover", "Backends": [backend("shared", url), backend("spare", U("name=permodel-spare"))]},
                 "well": {"Strategy": "Failover", "Backends": [backend("shared", url), backend("spare", U("name=permodel-spare"))]}})
    Env.up.reset()
    mark = len(Env.server.log())
    for _ in range(6):
        assert served_by(chat(Env.port(), "sick")) == "permodel-spare"
    assert len([e for e in requests_for("name=permodel+") if '"sick"' in e["body"]]) == 3
    assert wait_for(lambda: "shared:circuit_open" in log_since(Env.server, mark), 3)
    for _ in range(3):
        r = chat(Env.port(), "well")
        assert r.status == 200 and served_by(r) == "permodel", r.body


@test
def backend_dying_after_the_request_is_not_a_connect_error():
    """A backend that reads the request and closes: logged as no_response (it may
    have been processed), then the next backend answers."""
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("dies", U("name=nr+reset=1")), backend("good", U("name=nr-good"))]}})
    mark = len(Env.server.log())
    r = chat(Env.port(), "m")
    assert r.status == 200 and served_by(r) == "nr-good", r.body
    assert wait_for(lambda: "dies#0:no_response" in log_since(Env.server, mark), 2), \
        log_since(Env.server, mark)[-1000:]
    assert "dies#0:connect_error" not in log_since(Env.server, mark)


@test
def oversized_upstream_header_is_dropped_whole():
    """A 70 KB header from a backend is left out; the answer stays well-formed."""
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=bighdr+bighdr=70000"))]}})
    r = chat(Env.port(), "m")
    assert r.status == 200 and served_by(r) == "bighdr", (r.status, r.body[:300])
    # (the fake sends its usual x-request-id first: that one, the first, is kept)
    assert r.headers.get("x-request-id") == ["up-req-1"], r.headers.get("x-request-id", [""])[0][:80]
    assert "x-llmproxy-request-id" in r.headers and r.json()["backend"] == "bighdr", r.headers


@test
def broken_plain_answer_is_not_passed_off_as_whole():
    """A non-stream answer that breaks after it began: the client's connection is cut
    (HTTP/1.1: no final chunk), not ended as if the JSON were complete."""
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=cut+cut=1"))]}})
    data = raw_post(Env.port(), "/v1/chat/completions", {"model": "m", "messages": []})
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert b'"mess' in data and not data.endswith(b"0\r\n\r\n"), data[-200:]


@test
def keyless_backend_429_waits_out_retry_after():
    """A backend without keys that answers 429 with Retry-After is skipped for that
    long (not tried again at the next request)."""
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("nokey", U("name=nk+status=429+ra=30"), keys=[]), backend("ok", U("name=nk-ok"))]}})
    Env.up.reset()
    for _ in range(4):
        r = chat(Env.port(), "m")
        assert r.status == 200 and served_by(r) == "nk-ok", r.body
    assert len(requests_for("name=nk+")) == 1, len(requests_for("name=nk+"))


@test
def second_signal_ends_the_drain_at_once():
    """SIGTERM, then SIGTERM again: the open stream ends with the shutdown error
    event and is logged, and the responder exits within about a second."""
    srv = Env.server_class(Env.server.binary, procs=1, env={"LLMPROXY_DRAIN_MS": "20000"})
    srv.start({"long": {"Strategy": "Failover", "Backends": [backend("b", U("name=sig2+chunks=300+gap=100"))]}})
    try:
        pid = srv.responder_pids()[0]
        out = {}
        t = threading.Thread(target=lambda: out.update(r=chat(srv.port, "long", stream=True, timeout=30)))
        t.start()
        assert wait_for(lambda: len(requests_for("name=sig2")) == 1, 5)
        time.sleep(0.3)
        mark = len(srv.log())
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        t0 = time.time()
        os.kill(pid, signal.SIGTERM)
        t.join(10)
        ev = out["r"].events()
        assert json.loads(ev[-1])["error"]["code"] == "server_shutting_down", ev[-2:]
        assert wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                        open("/proc/%d/stat" % pid).read().split()[2] == "Z", 5)
        assert time.time() - t0 < 3, time.time() - t0
        assert re.search(r"model=long .*b#0:shutdown", log_since(srv, mark)), log_since(srv, mark)[-1500:]
    finally:
        srv.stop()


@test
def clients_leaving_mid_stream_are_not_backend_failures():
    """Clients that reset their connection while a stream flows: each is logged as
    gone (499), never as a broken backend, and the backend's circuit stays closed."""
    import struct
    Env.routing({"m": {"Strategy": "Failover", "Backends": [
        backend("a", U("name=leaver+endless=1+gap=5")), backend("b", U("name=leaver-b"))]}})
    mark = log_mark(Env.server)
    for _ in range(12):
        sock = open_request(Env.port(), "POST", "/v1/chat/completions",
                            {"model": "m", "stream": True, "messages": []})
        data = b""
        while data.count(b"data:") < 3:
            data += sock.recv(65536)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert wait_for(lambda: log_since(Env.server, mark).count("status=499") == 12, 5), \
        log_since(Env.server, mark)[-2000:]
    log = log_since(Env.server, mark)
    assert ":broken" not in log and "a#0:client_gone" in log, log[-2000:]
    r = chat(Env.port(), "m")
    assert served_by(r) == "leaver", "the circuit opened: %s" % r.body[:200]
