"""The programs' FastCGI side driven directly, the way a web server drives it,
including what web servers rarely do."""

import os
import socket
import struct
import time

import fcgi_client as fc
from harness import backend, write_routing
from test_proxy import Env, U, test


def binary(name):
    return os.path.join(os.path.dirname(Env.server.binary), name)


def linger_reset(s):
    """Close with a reset: the program's next write fails at once."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


class SlowReader:
    """A socket read 4 KiB at a time, 20 ms apart (about 200 KB/s)."""

    def __init__(self, sock):
        self.sock = sock
        self.first = self.last = None

    def settimeout(self, t):
        self.sock.settimeout(t)

    def recv(self, n):
        time.sleep(0.02)
        d = self.sock.recv(min(n, 4096))
        self.last = time.time()
        self.first = self.first or self.last
        return d


@test(servers=("lighttpd",))
def fastcgi_slow_reader_gets_the_whole_answer():
    """A web server that takes an answer slowly gets all of it, though the
    backend's end came long before its last bytes: the linger after an answer
    (LLMPROXY_BODY_TIMEOUT_MS, here 500 ms) waits for the queue to empty and
    counts from the last byte that moved, not from the answer's end."""
    prox = fc.Program(binary("llmproxy.fcgi"), env={"LLMPROXY_BODY_TIMEOUT_MS": "500"})
    try:
        write_routing(os.path.join(prox.dir, "dynamic_routing.json"),
                      {"m": {"Strategy": "Failover",
                             "Backends": [backend("a", U("name=slowfcgi+big=800000"))]}})
        s = prox.connect()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(fc.request(1, "POST", "/v1/chat/completions", b'{"model":"m","messages":[]}'))
        slow = SlowReader(s)
        out, types, end = fc.read_records(slow, timeout=10)
        s.close()
        print("        measured: 800 KB taken in %.2f s" % (slow.last - slow.first), flush=True)
        assert slow.last - slow.first > 2.0, "the reader was not slow enough to test the linger"
        assert end is not None, "the answer was cut after %d bytes" % len(out)
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"Status: 200") or b"200" in head.split(b"\r\n")[0], head[:200]
        assert len(body) > 790000 and b"slowfcgi" in body, (len(body), body[-200:])
    finally:
        prox.stop()
    assert not prox.sanitizer_reports(), "\n".join(prox.sanitizer_reports())[-3000:]


@test(servers=("lighttpd",))
def fastcgi_clients_that_leave_at_once():
    """Clients gone before their answer is written (the admin page, an admin POST,
    a chat) crash nothing, and both programs answer the next request."""
    admin = fc.Program(binary("llmproxy-admin.fcgi"), env={"LLMPROXY_ADMIN_TOKEN": "t" * 32})
    prox = fc.Program(binary("llmproxy.fcgi"))
    try:
        write_routing(os.path.join(prox.dir, "dynamic_routing.json"),
                      {"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=leave"))]}})
        body = b'{"Strategy":"Failover","Backends":[]}'
        for i in range(40):
            for prog, req in ((admin, fc.request(1, "GET", "/admin")),
                              (admin, fc.request(1, "POST", "/admin/config/x", body,
                                                 extra={"HTTP_AUTHORIZATION": "Bearer " + "t" * 32})),
                              (prox, fc.request(1, "POST", "/v1/chat/completions",
                                                b'{"model":"m","messages":[]}'))):
                s = prog.connect()
                s.sendall(req)
                linger_reset(s)
        time.sleep(0.5)
        out, types, end = admin.call(fc.request(1, "GET", "/admin"))
        assert out.startswith(b"Status: 200") and fc.END in types, out[:200]
        out, types, end = prox.call(fc.request(1, "GET", "/health"))
        assert b'{"Status":"Healthy"}' in out, out[:200]
        assert admin.proc.poll() is None and prox.proc.poll() is None, "a program died"
    finally:
        admin.stop()
        prox.stop()
    reports = admin.sanitizer_reports() + prox.sanitizer_reports()
    assert not reports, "\n".join(reports)[-3000:]


@test(servers=("lighttpd",))
def fastcgi_kept_connections_and_management():
    """A kept connection serves request after request, also when the web server
    abandons the rest of a body we already answered; GET_VALUES is answered; an
    abort before the parameters end gets END_REQUEST."""
    prox = fc.Program(binary("llmproxy.fcgi"))
    try:
        s = prox.connect()
        for _ in range(3):
            s.sendall(fc.request(1, "GET", "/health", keep=True))
            out, types, end = fc.read_records(s)
            assert b"Healthy" in out and end is not None and end[4] == 0, (out, types)
        # an answer before the body (413: too large): the server moves on without the rest
        big = {"CONTENT_LENGTH": str(1 << 30), "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1"}
        s.sendall(fc.begin(1, keep=True) + fc.params(1, {"REQUEST_METHOD": "POST",
                  "REQUEST_URI": "/v1/chat/completions", **big}) + fc.record(fc.STDIN, 1, b"{\"mo"))
        out, types, end = fc.read_records(s)
        assert out.startswith(b"Status: 413"), out[:200]
        s.sendall(fc.request(1, "GET", "/health", keep=True))
        out, types, end = fc.read_records(s)
        assert b"Healthy" in out, (out[:200], types)
        s.sendall(fc.record(fc.GET_VALUES, 0, fc.pairs({"FCGI_MPXS_CONNS": ""})))
        out, types, content = fc.read_records(s)
        assert fc.GET_VALUES_RESULT in types and b"FCGI_MPXS_CONNS0" in content, (types, content)
        s.close()
        s = prox.connect()
        s.sendall(fc.begin(1) + fc.record(fc.ABORT, 1))
        out, types, end = fc.read_records(s, timeout=3)
        assert end is not None and fc.END in types, types
        s.close()
    finally:
        prox.stop()
    assert not prox.sanitizer_reports(), "\n".join(prox.sanitizer_reports())[-3000:]


@test(servers=("lighttpd",))
def fastcgi_out_of_fds_does_not_spin():
    """With its fd limit reached the responder neither spins nor floods its log,
    and serves again once connections close."""
    prox = fc.Program(binary("llmproxy.fcgi"), prlimit_nofile=48)
    socks = []
    try:
        time.sleep(0.3)
        for _ in range(80):
            try:
                socks.append(prox.connect())
            except OSError:
                break
        t0 = os.times()
        time.sleep(2)
        t1 = os.times()
        lines = prox.log_text().count("\n")
        cpu = _cpu_seconds(prox.proc.pid)
        assert lines < 50, "%d log lines in 2 s" % lines
        assert cpu < 1.0, "the responder used %.2f s of CPU in 2 s" % cpu
        for s in socks:
            s.close()
        socks = []
        time.sleep(0.5)
        out, types, end = prox.call(fc.request(1, "GET", "/health"))
        assert b"Healthy" in out, out[:200]
        del t0, t1
    finally:
        for s in socks:
            s.close()
        prox.stop()


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
