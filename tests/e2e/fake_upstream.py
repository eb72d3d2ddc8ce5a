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

GET /_log returns every request received (method, path, headers, body);
POST /_reset clears it and the failn counters.
"""

import json
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

    def record(self, entry):
        with self.lock:
            self.log.append(entry)

    def bump(self, spec):
        with self.lock:
            n = self.counts.get(spec, 0) + 1
            self.counts[spec] = n
            return n


def parse_spec(seg):
    spec = {}
    for tok in seg.split("+"):
        if "=" in tok:
            k, v = tok.split("=", 1)
            spec[k] = unquote(v)
    return spec


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1"

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
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _wait_gone(self, seconds):
        """Sleeps, returning early once the client closed the connection."""
        end = time.time() + seconds
        self.connection.settimeout(0.05)
        while time.time() < end:
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except (socket.timeout, BlockingIOError):
                pass
            except OSError:
                return True
        return False

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
        entry = {
            "t": time.time(),
            "method": "POST",
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
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
        if status != 200:
            extra = {}
            if "ra" in spec:
                extra["Retry-After"] = spec["ra"]
            err = {"error": {"message": "fake %d from %s (key %s)" % (
                status, name, self.headers.get("Authorization", "")),
                "type": "fake", "param": None, "code": spec.get("code", "fake_%d" % status)}}
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
        if req.get("stream") is True:
            try:
                self._stream(spec, req, name)
            finally:
                entry["ended"] = time.time()
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
            try:
                self._chunk(b"data: " + json.dumps(ev).encode() + b"\n\n")
            except OSError:
                self.close_connection = True
                return
            i += 1
        self._chunk(b"data: [DONE]\n\n")
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
