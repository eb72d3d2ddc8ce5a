"""A throwaway Redis for the shared-state tests: Debian's redis-server on a unix
socket in a fresh temp dir, nothing persisted, in its own process group, so it
can be killed (SIGKILL, as a crash would) and started again, empty, on the same
socket, or hung (SIGSTOP: it accepts connections, the kernel queues what clients
send, nothing is answered) and let go again (SIGCONT)."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"


class RedisServer:
    def __init__(self, server=REDIS_SERVER, cli=REDIS_CLI):
        self.server = server
        self.cli_bin = cli
        self.dir = tempfile.mkdtemp(prefix="llmproxy-redis-")
        os.chmod(self.dir, 0o700)
        self.sock = os.path.join(self.dir, "redis.sock")  # well under 107 bytes
        self.logfile = os.path.join(self.dir, "redis.log")
        self.proc = None
        self.starts = 0
        self.paused = False

    def url(self):
        return "unix://" + self.sock

    def start(self, timeout=5.0):
        """Starts redis-server (again, empty, on the same socket) and returns self
        once PING answers PONG; raises RuntimeError after `timeout` seconds."""
        if self.proc is not None:
            raise RuntimeError("redis-server is running already (pid %d)" % self.proc.pid)
        args = [self.server, "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", self.dir]
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.starts += 1
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError("redis-server exited with %s at start; log:\n%s" % (code, self.log()))
            if os.path.exists(self.sock) and self.ping():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("redis-server did not answer PING within %.0f s; log:\n%s" % (timeout, self.log()))

    def ping(self):
        try:
            return self.cli("PING", timeout=1) == "PONG"
        except (OSError, subprocess.SubprocessError):
            return False

    def cli(self, *args, timeout=5):
        """redis-cli -s SOCK ARGS...: its stdout, stripped (raw: not a terminal)."""
        p = subprocess.run([self.cli_bin, "-s", self.sock] + [str(a) for a in args],
                           capture_output=True, text=True, errors="replace", timeout=timeout)
        return p.stdout.strip()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def sigstop(self):
        """SIGSTOP to redis-server: hung, not gone (stop() is taken: it shuts down)."""
        if self.proc is None:
            raise RuntimeError("redis-server is not running")
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def sigcont(self):
        """SIGCONT: it answers again, everything queued meanwhile first."""
        if self.proc is not None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.paused = False

    def kill(self):
        """SIGKILL to its process group, and waits: a crash, no goodbye to clients."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None
        self.paused = False

    def stop(self):
        """SIGTERM (SIGKILL after 5 s); the temp dir is removed."""
        if self.proc is not None:
            if self.paused:
                self.sigcont()  # a stopped process acts on SIGTERM only once continued
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""
