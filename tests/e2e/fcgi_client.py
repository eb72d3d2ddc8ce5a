"""A FastCGI client for tests: talks to the programs over their socket the way
a web server does, so a test can send what a web server would not (a request
abandoned mid-body on a kept connection, an abort before the parameters end,
a client that leaves at once)."""

import os
import socket
import struct
import subprocess
import tempfile
import time

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, STDERR, DATA, GET_VALUES, GET_VALUES_RESULT = range(1, 11)


def record(rtype, rid, content=b""):
    return struct.pack(">BBHHBB", 1, rtype, rid, len(content), 0, 0) + content


def pairs(params):
    out = b""
    for k, v in params.items():
        k, v = k.encode(), v.encode()
        for x in (k, v):
            out += bytes([len(x)]) if len(x) < 128 else struct.pack(">I", len(x) | 0x80000000)
        out += k + v
    return out


def begin(rid=1, keep=False):
    return record(BEGIN, rid, struct.pack(">HB5x", 1, 1 if keep else 0))


def params(rid, env):
    body = pairs(env)
    return record(PARAMS, rid, body) + record(PARAMS, rid)


def stdin(rid, data):
    out = b""
    for i in range(0, len(data), 65535):
        out += record(STDIN, rid, data[i:i + 65535])
    return out + record(STDIN, rid)


def request(rid, method, uri, body=b"", keep=False, extra=None):
    env = {"REQUEST_METHOD": method, "REQUEST_URI": uri, "SCRIPT_NAME": "", "QUERY_STRING": "",
           "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1",
           "CONTENT_LENGTH": str(len(body))}
    if body:
        env["CONTENT_TYPE"] = "application/json"
    env.update(extra or {})
    return begin(rid, keep) + params(rid, env) + stdin(rid, body)


def read_records(sock, until_end=True, timeout=10):
    """Reads records until END_REQUEST (or EOF); returns (stdout bytes, [types])."""
    sock.settimeout(timeout)
    buf = b""
    out = b""
    types = []
    while True:
        while len(buf) >= 8:
            _, t, _, n, pad, _ = struct.unpack(">BBHHBB", buf[:8])
            if len(buf) < 8 + n + pad:
                break
            content = buf[8:8 + n]
            buf = buf[8 + n + pad:]
            types.append(t)
            if t == STDOUT:
                out += content
            if t in (END, GET_VALUES_RESULT) and until_end:
                return out, types, content
        d = sock.recv(65536)
        if not d:
            return out, types, None
        buf += d


class Program:
    """A program (responder or admin) listening on a socket of its own."""

    def __init__(self, binary, env=None, prlimit_nofile=None):
        self.dir = tempfile.mkdtemp(prefix="llmproxy-fcgi-")
        self.sock = os.path.join(self.dir, "p.sock")
        self.log = os.path.join(self.dir, "log")
        e = dict(os.environ, LLMPROXY_STATE_DIR=self.dir,
                 ASAN_OPTIONS="detect_leaks=0:log_path=" + os.path.join(self.dir, "asan"),
                 UBSAN_OPTIONS="print_stacktrace=1:log_path=" + os.path.join(self.dir, "ubsan"))
        e.update(env or {})
        cmd = [binary, "--socket", self.sock]
        if prlimit_nofile:
            cmd = ["prlimit", "--nofile=%d" % prlimit_nofile, "--"] + cmd
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(cmd, env=e, stdout=f, stderr=f, start_new_session=True)
        for _ in range(200):
            if os.path.exists(self.sock):
                break
            time.sleep(0.02)

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock)
        return s

    def call(self, data, timeout=10):
        s = self.connect()
        try:
            s.sendall(data)
            return read_records(s, timeout=timeout)
        finally:
            s.close()

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def sanitizer_reports(self):
        return [open(os.path.join(self.dir, n), errors="replace").read()
                for n in os.listdir(self.dir) if n.startswith(("asan", "ubsan"))]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
