"""Smoke set under Apache running the programs itself: mod_fcgid, and plain CGI
routed by the shared-hosting .htaccess (etc/apache/htaccess)."""

import json
import os
import re

from harness import ApacheHosted, backend, chat, fetch, request
from test_proxy import Env, U, served_by, test


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
    reports = srv.sanitizer_reports()
    assert not reports, "\n".join(reports)[-3000:]


@test(servers=("apache",))
def apache_fcgid_smoke():
    smoke("fcgid")


@test(servers=("apache",))
def apache_cgi_htaccess_smoke():
    smoke("cgi")
