"""A fake OpenAI-compatible upstream that misbehaves on cue and records what it got.

Behaviour is chosen by the first path segment, so one server plays many
backends: BaseUrl http://127.0.0.1:PORT/<spec>/v1, where spec is a list of
key=value tokens joined by '+', e.g. "name=a+status=429+ra=5".

  name=X      tag written into answers (which backend answered)
  status=N    answer with status N and an OpenAI-style error body
  failn=N     only the first N requests to this spec fail with `status`
  ra=V        Retry-After header value
  delay=MS    wait before the status line (slow first byte)
  hang=1      never answer (until the client goes away)
  chunks=N    stream N SSE chunks (when the request has "stream": true)
  gap=MS      pause between SSE chunks
  drop=K      close the connection after K chunks (a broken stream)
  errevent=1  200 text/event-stream whose first event is an error
  comment=1   send an SSE comment line before the first event
  empty=1     200 with an empty body
  html=1      200 with an HTML body
  big=N       non-streaming answer padded to about N bytes
  endless=1   stream chunks forever (until the client goes away)
  onlykey=K   `status` applies only to requests whose key ends with K
  flip=S      `status` applies only in every other S-second window (healthy, failing, ...)
  code=C      the error body's code (e.g. context_length_exceeded)
  bigevent=N  the first SSE event carries N bytes of content
  bytewise=1  stream every byte in a chunk of its own

  fat=KB      each SSE chunk carries KB kilobytes of padding (a fast, large stream)
  onlymodel=M `status` applies only to requests for model M  bighdr=N    the answer carries an x-request-id of N characters
  cut=1       a plain (non-stream) 200 sent chunked, broken off halfway
  ptok=N      the answer's usage: N prompt tokens (10), ctok=N completion tokens (20),
  cached=N    of which N cached (0); streams send usage only when stream_options.include_usage
  nousage=1   the answer reports no usage at all
  trailer=1   a chunked answer (streamed or not) that ends with a trailer field
  reset=1     read the request, then close the connection without answering

The request head is parsed strictly, as production servers and CDNs do
(RFC 9110/9112): CRLF line ends, header names that are tokens with no space
before the colon, values without control characters, no obs-fold, one Host,
a numeric Content-Length, and, stricter than most, no header name twice. A
request that breaks a rule gets 400 and is logged with its "violation".

GET /_log returns every request received (method, path, headers, raw_headers,
body, violation); POST /_reset clears it and the failn counters.
"""

import email.parser
import email.policy
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.log = []
        self.counts = {}
        self.violations = []  # kept across resets

    def record(self, entry):
        with self.lock:
            self.log.append(entry)
            if entry.get("violation"):
                self.violations.append(entry)

    def bump(self, spec):
        with self.lock:
            n = self.counts.get(spec, 0) + 1
            self.counts[spec] = n
            return n


def usage_of(spec):
    p, c = int(spec.get("ptok", "10")), int(spec.get("ctok", "20"))
    u = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    if "cached" in spec:
        u["prompt_tokens_details"] = {"cached_tokens": int(spec["cached"])}
    return u


def req_model(raw):
    try:
        return json.loads(raw or b"{}").get("model")
    except (ValueError, AttributeError):
        return None


def parse_spec(seg):
    spec = {}
    for tok in seg.split("+"):
        if "=" in tok:
            k, v = tok.split("=", 1)
            spec[k] = unquote(v)
    return spec


TCHAR = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
FIELD_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")


def strict_head(request_line, lines):
    """Checks a request head; returns (violation or None, [(name, value)])."""
    if not request_line.endswith(b"\r\n"):
        return "request line does not end in CRLF", []
    parts = request_line[:-2].split(b" ")
    if len(parts) != 3 or not TCHAR.match(parts[0]) or parts[2] != b"HTTP/1.1":
        return "malformed request line %r" % request_line, []
    fields = []
    for raw in lines:
        if not raw.endswith(b"\r\n"):
            return "header line does not end in CRLF: %r" % raw, fields
        line = raw[:-2]
        if line[:1] in (b" ", b"\t"):
            return "obsolete line folding: %r" % raw, fields
        if b":" not in line:
            return "header line without a colon: %r" % raw, fields
        name, value = line.split(b":", 1)
        if not TCHAR.match(name):
            return "header name is not a token: %r" % name, fields
        value = value.strip(b" \t")
        if not FIELD_VALUE.match(value):
            return "control character in the value of %r" % name, fields
        fields.append((name.decode("latin-1"), value.decode("latin-1")))
    names = [n.lower() for n, _ in fields]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        return "header sent twice: %s" % ", ".join(dups), fields
    if names.count("host") != 1:
        return "no Host header", fields
    cl = [v for n, v in fields if n.lower() == "content-length"]
    if cl and not cl[0].isdigit():
        return "Content-Length is not a number: %r" % cl[0], fields
    if cl and "transfer-encoding" in names:
        return "both Content-Length and Transfer-Encoding", fields
    return None, fields


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1"

    def parse_request(self):
        """A strict parser in place of http.server's lenient one."""
        self.command, self.path, self.request_version = None, None, "HTTP/1.1"
        self.requestline = self.raw_requestline.decode("latin-1").rstrip("\r\n")
        self.close_connection = True
        if self.raw_requestline[:1] == b"\x16":
            # a TLS handshake (a test's https:// to this plain server), not HTTP
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return False
        lines = []
        while self.raw_requestline.endswith(b"\r\n"):
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            lines.append(raw)
            if len(lines) > 200:
                break
        violation, fields = strict_head(self.raw_requestline, lines)
        self.raw_fields = fields
        parts = self.raw_requestline.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) == 3:
            self.command, self.path = parts[0], parts[1]
        self.headers = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
            b"".join(lines) + b"\r\n", headersonly=True)
        if violation is not None:
            self.server.state.record({"t": time.time(), "method": self.command, "path": self.path,
                                      "headers": {}, "raw_headers": fields, "body": "",
                                      "spec": "", "violation": violation})
            body = json.dumps({"error": {"message": "strict upstream: " + violation,
                                         "type": "invalid_request_error", "param": None,
                                         "code": "malformed_request"}}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            return False
        conn = self.headers.get("Connection", "").lower()
        self.close_connection = conn == "close"
        return True

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        # headers and body go out in separate writes: without this, Nagle and
        # delayed ACKs add 40 ms to every answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        if self.path == "/_log":
            with self.server.state.lock:
                body = json.dumps(self.server.state.log).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _json(self, status, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "up-req-1")
        self.send_header("openai-processing-ms", "7")
        self.send_header("x-ratelimit-remaining-requests", "99")
        self.send_header("Connection", "keep-alive")
        self.send_header("Set-Cookie", "upstream=secret")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if "bighdr" in getattr(self, "spec", {}):
            self.send_header("x-request-id", "r" * int(self.spec["bighdr"]))
        self.end_headers()
        self.wfile.write(body)

    def _chunked_with_trailer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Trailer", "X-Checksum")
        self.end_headers()
        self._chunk(body)
        self.wfile.write(b"0\r\nX-Checksum: abc\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _wait_gone(self, seconds):
        """Sleeps, returning early once the client closed the connection. The
        socket's timeout is put back: the connection may serve more requests."""
        end = time.time() + seconds
        before = self.connection.gettimeout()
        self.connection.settimeout(0.05)
        try:
            while time.time() < end:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return True
                    time.sleep(0.01)  # bytes of a next request: not gone
                except (socket.timeout, BlockingIOError):
                    pass
                except OSError:
                    return True
            return False
        finally:
            self.connection.settimeout(before)

    def do_POST(self):
        st = self.server.state
        if self.path == "/_reset":
            with st.lock:
                st.log.clear()
                st.counts.clear()
            self.send_response(204)
            self.end_headers()
            return
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n) if n else b""
        seg = self.path.split("/")[1] if self.path.count("/") > 1 else ""
        spec = parse_spec(seg)
        self.spec = spec
        entry = {
            "t": time.time(),
            "method": "POST",
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "raw_headers": self.raw_fields,
            "body": raw.decode("utf-8", "replace"),
            "spec": seg,
        }
        st.record(entry)
        count = st.bump(seg)
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            req = {}
        name = spec.get("name", seg)

        if spec.get("reset"):
            # the request was read; the connection dies before any answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if spec.get("hang"):
            self._wait_gone(30)
            entry["ended"] = time.time()
            self.close_connection = True
            return
        if "delay" in spec:
            if self._wait_gone(int(spec["delay"]) / 1000.0):
                self.close_connection = True
                return
        status = int(spec.get("status", "200"))
        if "failn" in spec and count > int(spec["failn"]):
            status = 200
        if "onlykey" in spec and not self.headers.get("Authorization", "").endswith(spec["onlykey"]):
            status = 200
        if "flip" in spec and int(time.time() / float(spec["flip"])) % 2 == 0:
            status = 200
        if "onlymodel" in spec and req_model(raw) != spec["onlymodel"]:
            status = 200
        if status != 200:
            extra = {}
            if "ra" in spec:
                extra["Retry-After"] = spec["ra"]
            err = {"error": {"message": "fake %d from %s (key %s)" % (
                status, name, self.headers.get("Authorization", "")),
                "type": "fake", "param": None, "code": spec.get("code", "fake_%d" % status)}}
            if spec.get("trailer"):
                self._chunked_with_trailer(status, json.dumps(err).encode())
                return
            self._json(status, err, extra)
            return
        if spec.get("empty"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if spec.get("html"):
            body = b"<html><body>upstream portal</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.endswith("/audio/speech"):
            # speech: binary audio, chunked, a piece every `gap` ms (100)
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(spec.get("chunks", "5"))):
                if i and self._wait_gone(int(spec.get("gap", "100")) / 1000.0):
                    self.close_connection = True
                    return
                self._chunk(bytes([0xff, 0xfb, i, 0]) + name.encode() + bytes(range(256)) * 4)
            self._chunk(b"")
            return
        if req.get("stream") is True:
            try:
                self._stream(spec, req, name)
            finally:
                entry["ended"] = time.time()
            return
        if spec.get("cut"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"mess')
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        content = "hello from %s" % name
        if "big" in spec:
            content += "x" * int(spec["big"])
        if self.path.endswith("/embeddings"):
            obj = {"object": "list", "model": req.get("model"), "backend": name,
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]}
        else:
            obj = {"id": "chatcmpl-1", "object": "chat.completion", "model": req.get("model"),
                   "backend": name, "path": self.path,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop"}]}
        if not spec.get("nousage"):
            obj["usage"] = usage_of(spec)
        self._json(200, obj)

    def _stream(self, spec, req, name):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", "up-stream-1")
        self.end_headers()
        if spec.get("comment"):
            self._chunk(b": keep-alive\n\n")
        if spec.get("errevent"):
            self._chunk(b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n')
            self._chunk(b"")
            return
        if "bigevent" in spec:
            ev = {"i": 0, "backend": name, "choices": [{"delta": {"content": "x" * int(spec["bigevent"])}}]}
            self._chunk(b"data: " + json.dumps(ev).encode() + b"\n\n")
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
            return
        if spec.get("bytewise"):
            data = (b": hi\r\n\r\ndata: {\"i\": 0, \"backend\": \"%s\"}\r\n\r\n"
                    b"data: {\"i\": 1}\n\ndata: [DONE]\n\n" % name.encode())
            for i in range(len(data)):
                self._chunk(data[i:i + 1])
            self._chunk(b"")
            return
        pad = "p" * (int(spec["fat"]) * 1024) if "fat" in spec else None
        so = req.get("stream_options")
        with_usage = isinstance(so, dict) and so.get("include_usage") is True and not spec.get("nousage")
        chunks = int(spec.get("chunks", "3"))
        gap = int(spec.get("gap", "0")) / 1000.0
        drop = int(spec.get("drop", "-1"))
        i = 0
        while spec.get("endless") or i < chunks:
            if i == drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if i > 0 and gap > 0:
                if self._wait_gone(gap):
                    self.close_connection = True
                    return
            ev = {"id": "c%d" % i, "object": "chat.completion.chunk", "model": req.get("model"),
                  "backend": name, "i": i, "t": time.time(),
                  "choices": [{"index": 0, "delta": {"content": "tok%d " % i}}]}
            if pad is not None:
                ev["pad"] = pad
            if with_usage:
                ev["usage"] = None
            try:
                self._chunk(b"data: " + json.dumps(ev).encode() + b"\n\n")
            except OSError:
                self.close_connection = True
                return
            i += 1
        if with_usage:
            ev = {"id": "cu", "object": "chat.completion.chunk", "model": req.get("model"),
                  "choices": [], "usage": usage_of(spec)}
            self._chunk(b"data: " + json.dumps(ev).encode() + b"\n\n")
        self._chunk(b"data: [DONE]\n\n")
        if spec.get("trailer"):
            self.wfile.write(b"0\r\nX-Checksum: abc\r\n\r\n")
            self.wfile.flush()
            return
        self._chunk(b"")


class FakeUpstream:
    def __init__(self):
        self.state = State()
        ThreadingHTTPServer.request_queue_size = 1024
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # clients that leave mid-answer are part of the tests: no tracebacks
        self.httpd.handle_error = lambda request, client_address: None
        self.httpd.state = self.state
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, spec="ok"):
        return "http://127.0.0.1:%d/%s/v1" % (self.port, spec)

    def requests(self):
        with self.state.lock:
            return list(self.state.log)

    def violations(self):
        """Requests the strict parser refused since the start (none, when llmproxy is right)."""
        with self.state.lock:
            return list(self.state.violations)

    def reset(self):
        with self.state.lock:
            self.state.log.clear()
            self.state.counts.clear()


if __name__ == "__main__":
    import sys
    up = FakeUpstream()
    print(up.port, flush=True)
    try:
        up.httpd.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)
