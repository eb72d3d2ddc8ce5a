"""Who may use /v1/: keyless mode (no client key exists) serves only this machine.
A remote client is played from a network namespace of the test's own, over a
veth pair: loopback alone cannot show what a remote address gets."""

import json
import os
import subprocess

from harness import backend, fetch, request
from test_proxy import Env, U, test


def sh(*cmd, check=True):
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check)


def netns_dir_mounted():
    """/run/netns is a mount point (a bind mount of itself: os.path.ismount cannot tell)."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == "/run/netns" for line in f)


class Netns:
    def __init__(self):
        n = os.getpid() % 200
        self.name = "llmp%d" % os.getpid()
        self.host_if, self.ns_if = "llh%d" % os.getpid(), "lln%d" % os.getpid()
        self.host_ip, self.ns_ip = "10.211.%d.1" % n, "10.211.%d.2" % n
        # "ip netns add" makes /run/netns a mount point when it is not one yet
        self.mounted_before = netns_dir_mounted()
        sh("ip", "netns", "add", self.name)
        try:
            self._wire()
        except BaseException:
            self.close()
            raise

    def _wire(self):
        sh("ip", "link", "add", self.host_if[:15], "type", "veth", "peer", "name", self.ns_if[:15])
        sh("ip", "link", "set", self.ns_if[:15], "netns", self.name)
        sh("ip", "addr", "add", self.host_ip + "/30", "dev", self.host_if[:15])
        sh("ip", "link", "set", self.host_if[:15], "up")
        self.run("ip", "addr", "add", self.ns_ip + "/30", "dev", self.ns_if[:15])
        self.run("ip", "link", "set", self.ns_if[:15], "up")
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *cmd):
        # nsenter joins only the network namespace; "ip netns exec" also
        # remounts /sys, which fails inside a chroot
        return sh("nsenter", "--net=/run/netns/" + self.name, *cmd)

    def curl(self, url, *args):
        """(status, body) of a request from inside the namespace."""
        p = self.run("curl", "-s", "-m", "10", "-w", "\n%{http_code}", *args, url)
        body, _, code = p.stdout.rpartition("\n")
        return int(code), body

    def close(self):
        sh("ip", "netns", "del", self.name, check=False)
        sh("ip", "link", "del", self.host_if[:15], check=False)
        # leave no mount of ours behind (a chroot's /run/netns would keep it busy)
        for _ in range(3):
            if self.mounted_before or not netns_dir_mounted() or os.listdir("/run/netns"):
                break
            sh("umount", "/run/netns", check=False)


@test
def keyless_mode_serves_only_this_machine():
    if os.getuid() != 0:
        raise RuntimeError("needs root for a network namespace")
    ns = Netns()
    srv = open_srv = None
    try:
        models = {"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=access"))]}}
        srv = Env.server_class(Env.server.binary, env={"LLMPROXY_BIND": "0.0.0.0"}).start(models)
        url = "http://%s:%d" % (ns.host_ip, srv.port)
        body = json.dumps({"model": "m", "messages": []})
        # a remote client, even one that names a loopback Host, is refused
        for path, args in (("/v1/models", ()),
                           ("/v1/chat/completions", ("-H", "Content-Type: text/plain", "-d", body)),
                           ("/v1/models", ("-H", "Host: 127.0.0.1"))):
            code, b = ns.curl(url + path, *args)
            e = json.loads(b)["error"]
            assert code == 403 and e["code"] == "client_key_required", (path, code, b[:300])
            assert set(e) == {"message", "type", "param", "code"}, e
        code, b = ns.curl(url + "/health")
        assert code == 200 and json.loads(b) == {"Status": "Healthy"}, (code, b)
        # this machine: served, unless the request carries a foreign Host or browser marks
        p = srv.port
        assert request(p, "GET", "/v1/models")[0] == 200
        assert fetch(p, "POST", "/v1/chat/completions", body).status == 200
        refused = [({"Host": "evil.example"}, "DNS rebinding"),
                   ({"Origin": "http://evil.example"}, "a page elsewhere"),
                   ({"Sec-Fetch-Site": "cross-site"}, "cross-site"),
                   ({"Sec-Fetch-Site": "same-site"}, "same-site")]
        for hdrs, why in refused:
            r = fetch(p, "POST", "/v1/chat/completions", body, hdrs)
            assert r.status == 403 and r.json()["error"]["code"] == "client_key_required", \
                (why, r.status, r.body[:200])
        r = fetch(p, "POST", "/v1/chat/completions", body, {"Authorization": "Bearer sk-whatever"})
        assert r.status == 200, "a key presented in keyless mode is ignored: %s" % r.body[:200]
        # the documented opt-out for a trusted private network
        open_srv = Env.server_class(Env.server.binary, env={
            "LLMPROXY_BIND": "0.0.0.0", "LLMPROXY_ALLOW_KEYLESS_REMOTE": "1"}).start(models)
        code, b = ns.curl("http://%s:%d/v1/models" % (ns.host_ip, open_srv.port))
        assert code == 200 and json.loads(b)["data"][0]["id"] == "m", (code, b[:200])
    finally:
        for s in (srv, open_srv):
            if s is not None:
                s.stop()
        ns.close()
