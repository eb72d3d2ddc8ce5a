"""End-to-end harness: a real lighttpd running the responder, a fake upstream, a raw HTTP client."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")
# the environment the end-to-end servers run with (tests/run.py, test_redis.py)
E2E_ENV = {"LLMPROXY_MAX_BODY_BYTES": "262144",
           "LLMPROXY_DEADLINE_MS": "4000",
           "LLMPROXY_MAX_RESPONSE_BYTES": "4194304",
           "LLMPROXY_BODY_TIMEOUT_MS": "2000"}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write_routing(path, models):
    """Replaces the routing file atomically (as the admin program does)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"Models": models}, f, indent=1)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def backend(name, url, keys=None, model=None, weight=1, enabled=True, timeout=None):
    b = {"Name": name, "BaseUrl": url, "ApiKeys": keys if keys is not None else ["key-" + name],
         "BackendModelName": model, "Weight": weight, "Enabled": enabled}
    if timeout is not None:
        b["TimeoutSeconds"] = timeout
    return b


class Lighttpd:
    """lighttpd started through scripts/run.sh on a free port with its own state dir."""

    name = "lighttpd"

    def __init__(self, binary, procs=2, env=None):
        self.state = tempfile.mkdtemp(prefix="llmproxy-e2e-")
        self.port = free_port()
        self.routing = os.path.join(self.state, "dynamic_routing.json")
        self.errorlog = os.path.join(self.state, "error.log")
        self.binary = binary
        self.procs = procs
        self.extra_env = env or {}
        self.proc = None
        self.root = ROOT  # the checkout whose scripts/run.sh starts it

    def start(self, models=None):
        if models is not None:
            write_routing(self.routing, models)
        env = dict(os.environ)
        env.update({
            "LLMPROXY_PORT": str(self.port),
            "LLMPROXY_STATE_DIR": self.state,
            "LLMPROXY_BIN": self.binary,
            "LLMPROXY_ADMIN_BIN": os.path.join(os.path.dirname(self.binary),
                                               "llmproxy-admin.fcgi"),
            "LLMPROXY_PROCS": str(self.procs),
            "ASAN_OPTIONS": "abort_on_error=0:detect_leaks=0:log_path=" +
                            os.path.join(self.state, "asan"),
            "UBSAN_OPTIONS": "print_stacktrace=1:log_path=" + os.path.join(self.state, "ubsan"),
        })
        env.update(self.extra_env)
        with open(self.errorlog, "ab") as log:
            self.proc = subprocess.Popen([os.path.join(self.root, "scripts", "run.sh")], env=env,
                                         stdout=log, stderr=log, start_new_session=True)
        return self.wait_healthy()

    def wait_healthy(self):
        """Returns self once GET /health answers 200 (10 s at most)."""
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if request(self.port, "GET", "/health", timeout=5)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("%s did not come up; log:\n%s" % (self.name, self.log()))

    def responder_pids(self):
        """The responder processes (children of lighttpd, or of run.sh for Apache)."""
        out = subprocess.run(["ps", "-o", "pid=,ppid=,args=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [int(l.split()[0]) for l in out.splitlines()
                if "llmproxy.fcgi" in l and "--socket" not in l.split("llmproxy.fcgi")[0]]

    def stop(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def log(self):
        try:
            with open(self.errorlog, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def sanitizer_reports(self):
        found = []
        for name in os.listdir(self.state):
            if name.startswith("asan") or name.startswith("ubsan"):
                with open(os.path.join(self.state, name), errors="replace") as f:
                    found.append(f.read())
        text = self.log()
        if any(m in text for m in SANITIZER_MARKS):
            found.append(text)
        return found


class Apache(Lighttpd):
    """Apache with mod_proxy_fcgi (LLMPROXY_SERVER=apache scripts/run.sh): the two
    programs listen on their own sockets; one responder process."""

    name = "apache"

    def __init__(self, binary, procs=1, env=None):
        env = dict(env or {})
        env["LLMPROXY_SERVER"] = "apache"
        super().__init__(binary, procs=1, env=env)


class LighttpdCgi(Lighttpd):
    """lighttpd running llmproxy.fcgi as a plain CGI program (mod_cgi): a new
    process per request, sharing the state dir. mod_cgi hands its programs no
    environment of its own: `env` reaches them through setenv.add-environment."""

    name = "lighttpd-cgi"

    def start(self, models=None):
        if models is not None:
            write_routing(self.routing, models)
        os.chmod(self.state, 0o700)
        conf = os.path.join(self.state, "lighttpd-cgi.conf")
        bindir = os.path.dirname(self.binary)
        cgi_env = {"LLMPROXY_STATE_DIR": self.state,
                   "LLMPROXY_MAX_BODY_BYTES": "262144",
                   "ASAN_OPTIONS": "detect_leaks=0:log_path=%s/asan" % self.state,
                   "UBSAN_OPTIONS": "print_stacktrace=1:log_path=%s/ubsan" % self.state}
        cgi_env.update(self.extra_env)

        def quoted(v):
            return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')
        setenv = ",\n                          ".join(
            "%s => %s" % (quoted(k), quoted(v)) for k, v in cgi_env.items())
        with open(conf, "w") as f:
            f.write("""
server.modules += ("mod_alias", "mod_rewrite", "mod_setenv", "mod_cgi")
server.bind = "127.0.0.1"
server.port = %(port)d
server.document-root = "%(root)s/htdocs"
server.pid-file = "%(state)s/lighttpd.pid"
server.stream-response-body = 1
server.max-request-size = 320
alias.url = ("/cgi-bin/" => "%(bindir)s/")
$HTTP["url"] =~ "^/cgi-bin/" { cgi.assign = (".fcgi" => "") }
url.rewrite-once = ("^/(v1/.*|health)$" => "/cgi-bin/%(prog)s/$1",
                    "^/(admin(/.*)?|metrics)$" => "/cgi-bin/llmproxy-admin.fcgi/$1")
setenv.add-environment = (%(setenv)s)
""" % {"port": self.port, "root": ROOT, "state": self.state, "bindir": bindir,
                   "prog": os.path.basename(self.binary), "setenv": setenv})
        with open(self.errorlog, "ab") as log:
            self.proc = subprocess.Popen(["lighttpd", "-D", "-f", conf], stdout=log, stderr=log,
                                         start_new_session=True)
        return self.wait_healthy()


class ApacheHosted(Lighttpd):
    """Apache running the programs itself, laid out as the README's shared-hosting
    steps say: a home directory with public_html/ (the shipped .htaccess),
    public_html/cgi-bin/ (the programs and the shipped cgi-bin .htaccess, which
    alone makes them CGI programs: the server config sets no handler), and the
    state dir beside public_html, outside the web root. Apache's workers (and so
    the programs) run as an unprivileged account user when the tests run as root.
    mode "cgi" is mod_cgid; "fcgid" is mod_fcgid (server-level settings)."""

    ACCOUNT = "llmproxyacct"

    def __init__(self, binary, mode, env=None, state_env=True):
        super().__init__(binary, procs=1)
        self.state_env = state_env  # False: no SetEnv LLMPROXY_STATE_DIR (as under suEXEC)
        self.mode = mode
        self.name = "apache-" + mode
        self.home = tempfile.mkdtemp(prefix="llmproxy-home-")
        os.chmod(self.home, 0o711)
        self.state = os.path.join(self.home, "llmproxy-state")
        os.makedirs(self.state, 0o700)
        self.routing = os.path.join(self.state, "dynamic_routing.json")
        self.errorlog = os.path.join(self.home, "error.log")
        self.www = os.path.join(self.home, "public_html")
        self.setenv = env or {}

    def account(self):
        """(uid, gid) the workers run as, creating the account when root."""
        import pwd
        if os.getuid() != 0:
            return os.getuid(), os.getgid()
        try:
            pw = pwd.getpwnam(self.ACCOUNT)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", self.ACCOUNT], check=True)
            pw = pwd.getpwnam(self.ACCOUNT)
        return pw.pw_uid, pw.pw_gid

    def start(self, models=None):
        import shutil
        if models is not None:
            write_routing(self.routing, models)
        cgi = os.path.join(self.www, "cgi-bin")
        apache_dir = os.path.join(self.home, "apache")
        os.makedirs(cgi, exist_ok=True)
        os.makedirs(os.path.join(apache_dir, "fcgid"), exist_ok=True)
        bindir = os.path.dirname(self.binary)
        for prog in ("llmproxy.fcgi", "llmproxy-admin.fcgi"):
            shutil.copy(os.path.join(bindir, prog), cgi)
            os.chmod(os.path.join(cgi, prog), 0o755)
        with open(os.path.join(ROOT, "etc", "apache", "htaccess")) as f:
            ht = f.read().replace("/home/you/llmproxy-state", self.state)
        if not self.state_env:
            ht = "\n".join(l for l in ht.splitlines() if "LLMPROXY_STATE_DIR" not in l) + "\n"
        for k, v in self.setenv.items():
            ht += "SetEnv %s %s\n" % (k, v)
        with open(os.path.join(self.www, ".htaccess"), "w") as f:
            f.write(ht)
        if self.mode == "cgi":
            # the shipped cgi-bin/.htaccess alone makes them CGI programs
            shutil.copy(os.path.join(ROOT, "etc", "apache", "cgi-bin.htaccess"),
                        os.path.join(cgi, ".htaccess"))
        uid, gid = self.account()
        for d, _, files in os.walk(self.home):
            if d.startswith(apache_dir):
                continue
            os.chown(d, uid, gid)
            for fn in files:
                os.chown(os.path.join(d, fn), uid, gid)
        os.chown(self.home, 0, 0) if os.getuid() == 0 else None
        mods = "/usr/lib/apache2/modules"
        extra = ("LoadModule cgid_module %s/mod_cgid.so\nScriptSock %s/cgid.sock\n" % (mods, apache_dir)
                 if self.mode == "cgi" else
                 "LoadModule fcgid_module %s/mod_fcgid.so\nFcgidIPCDir %s/fcgid\n"
                 "FcgidProcessTableFile %s/fcgid_shm\nFcgidOutputBufferSize 0\n"
                 "FcgidIOTimeout 600\nFcgidBusyTimeout 3600\nFcgidMaxRequestLen 16842752\n"
                 "FcgidInitialEnv LLMPROXY_STATE_DIR %s\nFcgidPassHeader Authorization\n"
                 "<Directory \"%s\">\n    SetHandler fcgid-script\n    Options +ExecCGI\n"
                 "</Directory>\n"
                 % (mods, apache_dir, apache_dir, self.state, cgi))
        if self.mode == "fcgid":
            os.chown(os.path.join(apache_dir, "fcgid"), uid, gid)
        user = ""
        if os.getuid() == 0:
            user = "User %s\nGroup #%d" % (self.ACCOUNT, gid)
        conf = os.path.join(apache_dir, "apache-%s.conf" % self.mode)
        with open(conf, "w") as f:
            f.write("""ServerRoot "%(apache)s"
LoadModule mpm_event_module %(mods)s/mod_mpm_event.so
LoadModule authz_core_module %(mods)s/mod_authz_core.so
LoadModule mime_module %(mods)s/mod_mime.so
LoadModule dir_module %(mods)s/mod_dir.so
LoadModule rewrite_module %(mods)s/mod_rewrite.so
LoadModule env_module %(mods)s/mod_env.so
%(extra)s%(user)s
ServerName 127.0.0.1
Listen 127.0.0.1:%(port)d
PidFile "%(apache)s/apache.pid"
Mutex posixsem default
ErrorLog "/dev/stderr"
LogLevel warn
TypesConfig /etc/mime.types
DocumentRoot "%(www)s"
<Directory "%(www)s">
    AllowOverride All
    Require all granted
</Directory>
""" % {"apache": apache_dir, "mods": mods, "extra": extra, "port": self.port, "www": self.www,
       "user": user})
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:log_path=" + os.path.join(self.state, "asan"))
        with open(self.errorlog, "ab") as log:
            self.proc = subprocess.Popen(["apache2", "-f", conf, "-DFOREGROUND"], env=env,
                                         stdout=log, stderr=log, start_new_session=True)
        return self.wait_healthy()

    def write_routing(self, models):
        write_routing(self.routing, models)
        uid, gid = self.account()
        os.chown(self.routing, uid, gid)


class Response:
    def __init__(self, status, headers, body, chunks, t_sent):
        self.status = status
        self.headers = headers
        self.body = body
        self.chunks = chunks  # [(arrival time, bytes)]
        self.t_sent = t_sent

    def json(self):
        return json.loads(self.body)

    def events(self):
        """SSE data payloads, in order."""
        out = []
        for block in self.body.decode().replace("\r\n", "\n").split("\n\n"):
            for line in block.split("\n"):
                if line.startswith("data: "):
                    out.append(line[6:])
        return out


def _read_headers(sock, buf):
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            raise OSError("connection closed before headers")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    return status, headers, rest


def open_request(port, method, path, body=None, headers=None, timeout=30):
    """Sends an HTTP/1.0 request (so the answer is not chunked) and returns the socket."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    h = {"Host": "127.0.0.1"}
    if body is not None:
        h["Content-Type"] = "application/json"
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    req = "%s %s HTTP/1.0\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in h.items())
    sock.sendall(req.encode() + b"\r\n" + (body or b""))
    return sock


def raw_post(port, path, body, timeout=10):
    """POSTs JSON over HTTP/1.1 (Connection: close) and returns every byte that
    came back, as it came (chunk framing included), until the close or a reset."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (path.encode(), len(body), body))
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return data


def request(port, method, path, body=None, headers=None, timeout=30):
    r = fetch(port, method, path, body, headers, timeout)
    return r.status, r.headers, r.body


def fetch(port, method, path, body=None, headers=None, timeout=30):
    t_sent = time.time()
    sock = open_request(port, method, path, body, headers, timeout)
    try:
        status, hdrs, rest = _read_headers(sock, b"")
        chunks = [(time.time(), rest)] if rest else []
        while True:
            d = sock.recv(65536)
            if not d:
                break
            chunks.append((time.time(), d))
    finally:
        sock.close()
    return Response(status, hdrs, b"".join(c for _, c in chunks), chunks, t_sent)


def chat(port, model, stream=False, extra=None, headers=None, path="/v1/chat/completions",
         timeout=30):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    body.update(extra or {})
    return fetch(port, "POST", path, body, headers, timeout)
