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
  cut=1       a plain (non-stream) answer sent chunked, broken off halfway: a 200, an
              error's body with status=S, and on /responses only a follow-up's
              (previous_response_id, or by id), so the response can be made first
  stall=MS    with cut=1: wait MS after the first half before breaking off
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

The rest of the API, by path:
  /responses        Responses: a stored response (id resp_<name>_<n>), streamed as typed
                    events; failev=1 streams response.created then response.failed;
                    previous_response_id must name a response of this backend and key
  /responses/{id}[/cancel|/input_items]  GET, DELETE, POST: 404 unless this backend and
                    key made it
  /messages         Anthropic Messages (x-api-key and anthropic-version required, no
                    Authorization; errors in Anthropic's shape); count_tokens too
  multipart paths   /audio/transcriptions, /audio/translations, /images/edits,
                    /images/variations: the form is parsed strictly; the answer names
                    the model part and the SHA-256 of every other part

GET /_log returns every request received (method, path, headers, raw_headers,
body, violation); POST /_reset clears it and the failn counters.
"""

import email.parser
import email.policy
import hashlib
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
        self.responses = {}  # id -> {"obj", "key", "name"}

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


def half(obj):
    """The first half of obj's JSON: an answer broken off halfway."""
    data = json.dumps(obj).encode()
    return data[:len(data) // 2]


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


def parse_form(ctype, raw):
    """Parses multipart/form-data strictly: (fields {name: (filename, bytes)}, None) or
    (None, why). CRLF line ends, a boundary, each part with a form-data name, the close
    delimiter at the end, no name twice."""
    m = re.match(r'^multipart/form-data;\s*boundary=("?)([0-9A-Za-z\'()+_,./:=? -]{1,70})\1$', ctype)
    if not m:
        return None, "no boundary in %r" % ctype
    b = m.group(2).encode()
    if not raw.startswith(b"--" + b + b"\r\n"):
        return None, "does not start with the delimiter"
    body = raw[len(b) + 4:]
    end = body.rfind(b"\r\n--" + b + b"--")
    if end < 0 or body[end + len(b) + 6:][:2] not in (b"", b"\r\n"):  # then an epilogue
        return None, "no close delimiter at the end"
    fields = {}
    for part in body[:end].split(b"\r\n--" + b + b"\r\n"):
        if b"\r\n\r\n" not in part:
            return None, "a part without a blank line after its headers"
        head, content = part.split(b"\r\n\r\n", 1)
        cd = None
        for line in head.split(b"\r\n"):
            if b"\n" in line or b"\r" in line or b":" not in line:
                return None, "bad part header %r" % line
            k, v = line.split(b":", 1)
            if k.strip().lower() == b"content-disposition":
                cd = v.strip().decode("latin-1")
        mm = re.match(r'^form-data;\s*name="([^"]*)"(?:;\s*filename="([^"]*)")?', cd or "")
        if not mm:
            return None, "a part without Content-Disposition: form-data; name"
        if mm.group(1) in fields:
            return None, "field %r twice" % mm.group(1)
        fields[mm.group(1)] = (mm.group(2), content)
    if "model" not in fields:
        return None, "no model field"
    return fields, None


def form_text(fields, name):
    return fields[name][1].decode("utf-8", "replace") if name in fields else None


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
        self._api("GET")

    def do_DELETE(self):
        self._api("DELETE")

    def do_HEAD(self):
        self._api("HEAD")

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
        if self.command != "HEAD":
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
        self._api("POST")

    def _api(self, method):
        st = self.server.state
        if method != "POST" and "/responses/" not in self.path:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n) if n else b""
        seg = self.path.split("/")[1] if self.path.count("/") > 1 else ""
        spec = parse_spec(seg)
        self.spec = spec
        entry = {
            "t": time.time(),
            "method": method,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "raw_headers": self.raw_fields,
            "body": raw.decode("utf-8", "replace"),
            "spec": seg,
        }
        st.record(entry)
        count = st.bump(seg)
        ctype = self.headers.get("Content-Type", "")
        form = None
        if ctype.startswith("multipart/"):
            form, why = parse_form(ctype, raw)
            if form is None:
                entry["violation"] = "multipart: " + why
                st.record({"violation": entry["violation"], "path": self.path})
                self._json(400, {"error": {"message": "bad multipart body: " + why,
                                           "type": "invalid_request_error", "param": None,
                                           "code": None}})
                return
            entry["form"] = {k: (v.decode("utf-8", "replace") if fn is None else
                                 {"filename": fn, "bytes": len(v),
                                  "sha256": hashlib.sha256(v).hexdigest()})
                             for k, (fn, v) in form.items()}
            req = {"model": form_text(form, "model"), "stream": form_text(form, "stream") == "true"}
        else:
            try:
                req = json.loads(raw or b"{}")
            except ValueError:
                req = {}
        name = spec.get("name", seg)
        anthropic = "/messages" in self.path
        if anthropic:
            if "authorization" in {k.lower() for k in self.headers.keys()} or \
                    not self.headers.get("x-api-key") or not self.headers.get("anthropic-version"):
                self._anthropic_error(401 if not self.headers.get("x-api-key") else 400,
                                      "authentication_error", "x-api-key and anthropic-version "
                                      "are required; Authorization is not accepted")
                return

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
            if anthropic:
                self._anthropic_error(status, "overloaded_error" if status >= 500 else
                                      "invalid_request_error", "fake %d from %s" % (status, name),
                                      extra)
                return
            err = {"error": {"message": "fake %d from %s (key %s)" % (
                status, name, self.headers.get("Authorization", "")),
                "type": "fake", "param": None, "code": spec.get("code", "fake_%d" % status)}}
            if spec.get("trailer"):
                self._chunked_with_trailer(status, json.dumps(err).encode())
                return
            if spec.get("cut"):
                self._cut(status, half(err))
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
        if "/responses" in self.path:
            self._responses(method, spec, req, name, count)
            return
        if anthropic:
            self._messages(spec, req, name)
            return
        if form is not None:
            self._form_answer(spec, req, form, name)
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
            self._cut(200, b'{"id":"chatcmpl-1","object":"chat.completion","choices":[{"mess')
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

    def _cut(self, status, part):
        """The start of a JSON answer, sent chunked, then the connection broken off."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk(part)
        self.close_connection = True
        if self._wait_gone(int(self.spec.get("stall", "0")) / 1000.0):
            return
        self.connection.shutdown(socket.SHUT_RDWR)

    def _anthropic_error(self, status, etype, msg, extra=None):
        self._json(status, {"type": "error", "error": {"type": etype, "message": msg}}, extra)

    def _events(self, events, spec, first_extra=0):
        """Sends (event, data) pairs as SSE, honouring gap and drop (counted after
        the first first_extra events)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        gap = int(spec.get("gap", "0")) / 1000.0
        drop = int(spec.get("drop", "-1"))
        for i, (ev, data) in enumerate(events):
            if drop >= 0 and i == drop + first_extra:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if i > 0 and gap > 0 and self._wait_gone(gap):
                self.close_connection = True
                return
            try:
                self._chunk(b"event: %s\ndata: %s\n\n" % (ev.encode(), json.dumps(data).encode()))
            except OSError:
                self.close_connection = True
                return
        self._chunk(b"")

    def _responses(self, method, spec, req, name, count):
        st = self.server.state
        key = self.headers.get("Authorization", "")
        m = re.match(r"^/[^/]*/v1/responses/([^/?]+)(/cancel|/input_items)?(\?.*)?$", self.path)
        if m:
            rid, sub = m.group(1), m.group(2)
            with st.lock:
                have = st.responses.get(rid)
            if have is None or have["key"] != key or have["name"] != name:
                self._json(404, {"error": {"message": "No response with id '%s' at %s" % (rid, name),
                                           "type": "invalid_request_error", "param": None,
                                           "code": None}})
                return
            if spec.get("cut") and method != "DELETE":
                self._cut(200, half(have["obj"]))
                return
            if method == "DELETE":
                with st.lock:
                    st.responses.pop(rid, None)
                self._json(200, {"id": rid, "object": "response", "deleted": True})
            elif sub == "/cancel":
                self._json(200, dict(have["obj"], status="cancelled"))
            elif sub == "/input_items":
                self._json(200, {"object": "list", "backend": name, "query": m.group(3) or "",
                                 "data": [{"id": "msg_in", "type": "message", "role": "user",
                                           "content": [{"type": "input_text", "text": "hi"}]}],
                                 "first_id": "msg_in", "last_id": "msg_in", "has_more": False})
            else:
                self._json(200, have["obj"])
            return
        prev = req.get("previous_response_id")
        if prev is not None:
            with st.lock:
                have = st.responses.get(prev)
            if have is None or have["key"] != key or have["name"] != name:
                self._json(404, {"error": {"message": "Previous response with id '%s' not found." % prev,
                                           "type": "invalid_request_error",
                                           "param": "previous_response_id", "code": None}})
                return
        if prev is not None and spec.get("cut") and not req.get("stream"):
            self._cut(200, half(have["obj"]))
            return
        rid = "resp_%s_%d_%d" % (re.sub(r"[^A-Za-z0-9]", "", name), count, int(time.time() * 1000))
        u = usage_of(spec)
        usage = {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
                 "total_tokens": u["total_tokens"],
                 "input_tokens_details": {"cached_tokens": int(spec.get("cached", "0"))},
                 "output_tokens_details": {"reasoning_tokens": 0}}
        text = "hello from %s" % name
        obj = {"id": rid, "object": "response", "created_at": int(time.time()), "status": "completed",
               "model": req.get("model"), "backend": name, "previous_response_id": prev,
               "output": [{"type": "message", "id": "msg_" + rid, "status": "completed",
                           "role": "assistant",
                           "content": [{"type": "output_text", "text": text, "annotations": []}]}],
               "usage": usage}
        with st.lock:
            st.responses[rid] = {"obj": obj, "key": key, "name": name}
        if not req.get("stream"):
            self._json(200, obj)
            return
        pending = dict(obj, status="in_progress", output=[], usage=None)
        evs = [("response.created", {"type": "response.created", "response": pending}),
               ("response.in_progress", {"type": "response.in_progress", "response": pending})]
        if spec.get("failev"):
            evs.append(("response.failed", {"type": "response.failed", "response": dict(
                pending, status="failed", error={"code": "server_error", "message": "fake failure"})}))
        elif spec.get("errevent"):
            evs.append(("error", {"type": "error", "code": "server_error", "message": "overloaded",
                                  "param": None}))
        else:
            for i in range(int(spec.get("chunks", "3"))):
                evs.append(("response.output_text.delta", {
                    "type": "response.output_text.delta", "item_id": "msg_" + rid,
                    "output_index": 0, "content_index": 0, "delta": "tok%d " % i,
                    "backend": name}))
            evs.append(("response.completed", {"type": "response.completed", "response": obj}))
        for n, (_, d) in enumerate(evs):
            d["sequence_number"] = n
        self._events(evs, spec, first_extra=2)

    def _messages(self, spec, req, name):
        if self.path.endswith("/count_tokens"):
            self._json(200, {"input_tokens": 42, "backend": name})
            return
        u = usage_of(spec)
        mid = "msg_%s_%d" % (re.sub(r"[^A-Za-z0-9]", "", name), int(time.time() * 1000))
        text = "hello from %s" % name
        msg = {"id": mid, "type": "message", "role": "assistant", "model": req.get("model"),
               "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
               "stop_sequence": None, "backend": name,
               "usage": {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
                         "cache_read_input_tokens": int(spec.get("cached", "0")),
                         "cache_creation_input_tokens": 0}}
        if not req.get("stream"):
            self._json(200, msg)
            return
        if spec.get("errevent"):
            self._events([("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                "message": "Overloaded"}})], spec)
            return
        start = dict(msg, content=[], stop_reason=None,
                     usage=dict(msg["usage"], output_tokens=1))
        evs = [("message_start", {"type": "message_start", "message": start}),
               ("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}}),
               ("ping", {"type": "ping"})]
        for i in range(int(spec.get("chunks", "3"))):
            evs.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": "tok%d " % i},
                                                "backend": name}))
        evs += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                   "usage": {"output_tokens": u["completion_tokens"]}}),
                ("message_stop", {"type": "message_stop"})]
        self._events(evs, spec, first_extra=3)

    def _form_answer(self, spec, req, form, name):
        parts = {k: {"filename": fn, "bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()}
                 for k, (fn, v) in form.items() if k != "model"}
        u = usage_of(spec)
        if self.path.endswith("/images/edits") or self.path.endswith("/images/variations"):
            obj = {"created": int(time.time()), "backend": name, "model": req["model"],
                   "parts": parts, "data": [{"b64_json": "aGVsbG8="}],
                   "usage": {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
                             "total_tokens": u["total_tokens"]}}
        else:
            obj = {"text": "transcribed by %s" % name, "backend": name, "model": req["model"],
                   "parts": parts}
        if req.get("stream"):
            evs = [("transcript.text.delta", {"type": "transcript.text.delta", "delta": "tr%d " % i})
                   for i in range(int(spec.get("chunks", "3")))]
            evs.append(("transcript.text.done", {"type": "transcript.text.done", "text": obj["text"]}))
            self._events(evs, spec)
            return
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
