"""End-to-end tests of the admin program behind the same lighttpd."""

import glob
import json
import os
import random
import signal
import subprocess
import threading
import time

from harness import ROOT, backend, chat, fetch, request
from test_proxy import Env, U, run_parallel, served_by, test


def token():
    with open(os.path.join(Env.server.state, "admin.token")) as f:
        return f.read().strip()


def admin(method, path, body=None, tok=None, headers=None):
    h = {"Authorization": "Bearer " + (tok if tok is not None else token())}
    h.update(headers or {})
    if tok == "":
        del h["Authorization"]
    return fetch(Env.port(), method, "/admin/config" + path, body, h)


def routing_bytes():
    with open(Env.server.routing, "rb") as f:
        return f.read()


def routing():
    return json.loads(routing_bytes())


def model(*backends, strategy="Failover"):
    return {"Strategy": strategy, "Backends": list(backends)}


@test
def admin_page_is_served():
    for path in ("/admin", "/admin/"):
        s, h, b = request(Env.port(), "GET", path)
        assert s == 200 and b"<title>llmproxy admin</title>" in b, (path, s)
        assert h["content-type"][0].startswith("text/html"), h
    # nothing loaded from elsewhere
    b = open(os.path.join(ROOT, "htdocs", "admin.html")).read()
    assert "http://" not in b.replace("http://127", "") and "https://" not in b.replace(
        "https://api.openai.com", ""), "the page must not load anything from the internet"


@test
def admin_auth():
    r = admin("GET", "", tok="")
    assert r.status == 401 and r.headers["www-authenticate"][0].startswith("Bearer"), r.headers
    r = admin("GET", "", tok="wrong-token")
    assert r.status == 401, r.status
    r = admin("GET", "", tok=token() + "x")
    assert r.status == 401, r.status
    r = admin("GET", "", tok=token()[:-1])
    assert r.status == 401, r.status
    r = fetch(Env.port(), "GET", "/admin/config", None, {"Authorization": "Basic " + token()})
    assert r.status == 401, r.status
    r = admin("GET", "")
    assert r.status == 200 and "Models" in r.json(), (r.status, r.body)
    assert not any(k.startswith("access-control") for k in r.headers), r.headers
    assert "set-cookie" not in r.headers
    before = routing_bytes()
    body = model(backend("a", U("name=a")))
    for hdrs in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                 {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        r = admin("POST", "/xsite", body, headers=hdrs)
        assert r.status == 403, (hdrs, r.status, r.body)
        r = admin("DELETE", "/xsite", headers=hdrs)
        assert r.status == 403, (hdrs, r.status)
    assert routing_bytes() == before
    # a same-origin page (what admin.html sends) is fine
    same = {"Origin": "http://127.0.0.1:%d" % Env.port(), "Sec-Fetch-Site": "same-origin"}
    fetch_headers = dict(same, Host="127.0.0.1:%d" % Env.port())
    r = admin("POST", "/xsite", body, headers=fetch_headers)
    assert r.status == 201, (r.status, r.body)
    assert admin("DELETE", "/xsite").status == 200


@test
def admin_crud_round_trip():
    admin("DELETE", "/crud/m")
    body = model(backend("one", U("name=one"), keys=["sk-crud-secret-0001"]), strategy="RoundRobin")
    body["Backends"][0]["CustomField"] = {"kept": [1, 2]}
    body["Note"] = "unknown fields are kept"
    r = admin("POST", "/crud/m", body)
    assert r.status == 201, (r.status, r.body)
    got = r.json()
    assert got["Strategy"] == "RoundRobin" and got["Note"] == "unknown fields are kept", got
    assert got["Backends"][0]["CustomField"] == {"kept": [1, 2]}, got
    r = admin("GET", "/crud/m")
    assert r.status == 200 and r.json()["Backends"][0]["Name"] == "one", r.body
    r = admin("GET", "/crud%2Fm")
    assert r.status == 200, "percent-encoded slash in the model name: %d" % r.status
    r = admin("GET", "")
    assert "crud/m" in r.json()["Models"], r.body
    assert routing()["Models"]["crud/m"]["Note"] == "unknown fields are kept"
    body["Strategy"] = "Weighted"
    r = admin("POST", "/crud/m", body)
    assert r.status == 200 and r.json()["Strategy"] == "Weighted", (r.status, r.body)
    r = admin("DELETE", "/crud/m")
    assert r.status == 200, r.status
    assert "crud/m" not in routing()["Models"]
    assert admin("DELETE", "/crud/m").status == 404
    assert admin("GET", "/crud/m").status == 404
    assert admin("PATCH", "/crud/m", body).status == 405
    assert admin("POST", "", body).status == 405


@test
def admin_validation_changes_nothing():
    admin("POST", "/valid", model(backend("a", U("name=a"))))
    good = backend("a", U("name=a"))

    def with_(**kw):
        b = dict(good)
        b.update(kw)
        return model(b)
    cases = [
        ("bad strategy", {"Strategy": "Random", "Backends": [good]}, "Strategy"),
        ("no backends", {"Strategy": "Failover", "Backends": []}, "Backends"),
        ("backends missing", {"Strategy": "Failover"}, "Backends"),
        ("duplicate names", model(good, dict(good)), "used twice"),
        ("empty name", with_(Name=""), "Name"),
        ("ftp url", with_(BaseUrl="ftp://h/v1"), "BaseUrl"),
        ("no url", with_(BaseUrl=""), "BaseUrl"),
        ("weight 0", with_(Weight=0), "Weight"),
        ("weight negative", with_(Weight=-3), "Weight"),
        ("weight fraction", with_(Weight=1.5), "Weight"),
        ("weight huge", with_(Weight=10 ** 12), "Weight"),
        ("weight string", with_(Weight="2"), "Weight"),
        ("timeout 0", with_(TimeoutSeconds=0), "TimeoutSeconds"),
        ("timeout negative", with_(TimeoutSeconds=-1), "TimeoutSeconds"),
        ("enabled string", with_(Enabled="yes"), "Enabled"),
        ("keys not array", with_(ApiKeys="sk-1"), "ApiKeys"),
        ("CR LF in name", with_(Name="a\r\nX-Evil: 1"), "control characters"),
        ("LF in key", with_(ApiKeys=["sk-1\nX"]), "control characters"),
        ("LF in unknown field", dict(model(good), Extra="a\nb"), "control characters"),
        ("NUL in model name", with_(BackendModelName="a\u0000b"), "NUL"),
        ("masked key unknown", with_(ApiKeys=["****zzzz"]), "masked"),
    ]
    for name, body, needle in cases:
        before = routing_bytes()
        r = admin("POST", "/valid", body)
        assert r.status == 400, (name, r.status, r.body)
        msg = r.json()["error"]["message"]
        assert needle in msg, (name, msg)
        assert routing_bytes() == before, name
    for raw in ("{not json", "[1,2]", "", "\"x\""):
        r = fetch(Env.port(), "POST", "/admin/config/valid", raw,
                  {"Authorization": "Bearer " + token()})
        assert r.status == 400, (raw, r.status, r.body)
    for bad_name in ("a..b", "a%20b", "x" * 257, "%00", "a%0Ab"):
        r = admin("POST", "/" + bad_name, model(good))
        # (Apache itself refuses an encoded NUL in a URL with 404)
        assert r.status == 400 or (bad_name == "%00" and r.status == 404), (bad_name, r.status)
        assert bad_name.replace("%20", " ") not in routing()["Models"]


@test
def admin_masks_keys_and_keeps_them():
    secrets = ["sk-live-abcdefgh12345678", "sk-live-zyxwvuts87654321", "short"]
    body = model(backend("k", U("name=k"), keys=list(secrets)))
    r = admin("POST", "/masked", body)
    assert r.status in (200, 201), r.body
    bodies = [r.body, admin("GET", "").body, admin("GET", "/masked").body]
    for b in bodies:
        for s in secrets:
            assert s.encode() not in b, "key %r appears in an admin response" % s
    shown = admin("GET", "/masked").json()["Backends"][0]["ApiKeys"]
    assert shown == ["****5678", "****4321", "****"], shown
    # send the masked keys back with one new key and one removed: stored keys are kept
    r = admin("POST", "/masked", model(backend("k", U("name=k"), keys=[shown[1], "sk-new-key-9999", shown[2]])))
    assert r.status == 200, r.body
    assert routing()["Models"]["masked"]["Backends"][0]["ApiKeys"] == [
        "sk-live-zyxwvuts87654321", "sk-new-key-9999", "short"]
    # the proxy uses the real key
    Env.up.reset()
    for _ in range(3):
        chat(Env.port(), "masked")
    auths = sorted(e["headers"]["authorization"] for e in Env.up.requests())
    assert auths == sorted(["Bearer sk-live-zyxwvuts87654321", "Bearer sk-new-key-9999", "Bearer short"]), auths
    assert admin("DELETE", "/masked").status == 200


@test
def admin_files_are_private():
    admin("POST", "/perm", model(backend("a", U("name=a"), keys=["sk-perm-123456789"])))
    for name in ("dynamic_routing.json", "admin.token", "runtime.state"):
        mode = os.stat(os.path.join(Env.server.state, name)).st_mode & 0o777
        assert mode == 0o600, "%s has mode %o" % (name, mode)
    # under Apache too: its workers reach the sockets in a run dir of their own
    assert os.stat(Env.server.state).st_mode & 0o777 == 0o700
    with open(os.path.join(Env.server.state, "admin.token")) as f:
        assert len(f.read().strip()) >= 64, "token shorter than 32 random bytes in hex"
    admin("DELETE", "/perm")


@test
def admin_fifty_parallel_posts():
    names = ["par-%02d" % i for i in range(50)]

    def post(i):
        return admin("POST", "/" + names[i], model(backend("b%d" % i, U("name=p%d" % i)))).status
    statuses = run_parallel(50, post)
    assert all(s in (200, 201) for s in statuses), statuses
    models = routing()["Models"]  # parses: the file is valid JSON
    missing = [n for n in names if n not in models]
    assert not missing, "lost models: %s" % missing
    for i, n in enumerate(names):
        assert models[n]["Backends"][0]["Name"] == "b%d" % i
    assert not glob.glob(os.path.join(Env.server.state, "dynamic_routing.json.tmp-*"))
    statuses = run_parallel(50, lambda i: admin("DELETE", "/" + names[i]).status)
    assert all(s == 200 for s in statuses), statuses
    assert not any(n in routing()["Models"] for n in names)


@test
def admin_hot_reload_next_request():
    for i in range(10):
        name = "hr%d" % i
        r = admin("POST", "/hot", model(backend(name, U("name=" + name))))
        assert r.status in (200, 201), r.body
        assert served_by(chat(Env.port(), "hot")) == name, i
    admin("DELETE", "/hot")
    assert chat(Env.port(), "hot").status == 404


@test
def admin_kill9_during_writes_never_corrupts():
    """200 rounds: a writer is killed at a random moment; the file is always the old or the new."""
    tool = os.path.join(ROOT, "cgi-bin", "llmproxy-admin.fcgi")
    env = dict(os.environ, LLMPROXY_STATE_DIR=Env.server.state)
    rnd = random.Random(1852)
    killed = completed = 0
    prev = set(routing()["Models"])
    for i in range(200):
        name = "kill-%d" % i
        body = json.dumps(model(backend("a", U("name=k%d" % i), keys=["sk-kill-%08d" % i]))).encode()
        p = subprocess.Popen([tool, "--put", name], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.stdin.write(body)
        p.stdin.close()
        time.sleep(rnd.uniform(0, 0.004))
        p.send_signal(signal.SIGKILL)
        rc = p.wait()
        now = set(json.loads(routing_bytes())["Models"])  # must always parse
        assert now in (prev, prev | {name}), "round %d: models changed unexpectedly" % i
        if name in now:
            completed += 1
        else:
            killed += 1
        prev = now
        assert rc in (0, -9), rc
    assert killed > 10 and completed > 10, (killed, completed)  # both outcomes really happened
    # the next writer sweeps what killed writers left
    subprocess.run([tool, "--delete", "kill-0"], env=env, capture_output=True)
    left = glob.glob(os.path.join(Env.server.state, "dynamic_routing.json.tmp-*"))
    assert not left, left
    for i in range(200):
        subprocess.run([tool, "--delete", "kill-%d" % i], env=env, capture_output=True)
    print("        (kill -9 rounds: %d interrupted, %d completed)" % (killed, completed))


@test
def admin_corrupt_file_is_never_overwritten():
    good = routing_bytes()
    try:
        for broken in (b"", b"{ broken", b'{"Models": {"x": {"Backends": []}}}'):
            with open(Env.server.routing, "wb") as f:
                f.write(broken)
            r = admin("GET", "")
            assert r.status == 409 and "invalid" in r.json()["error"]["message"], (broken, r.body)
            r = admin("POST", "/new", model(backend("a", U("name=a"))))
            assert r.status == 409, (broken, r.status)
            with open(Env.server.routing, "rb") as f:
                assert f.read() == broken, "a corrupt file was overwritten"
    finally:
        tmp = Env.server.routing + ".restore"
        with open(tmp, "wb") as f:
            f.write(good)
        os.chmod(tmp, 0o600)
        os.replace(tmp, Env.server.routing)


@test
def admin_token_from_environment():
    srv = Env.server_class(Env.server.binary, procs=1,
                           env={"LLMPROXY_ADMIN_TOKEN": "env-token-0123456789abcdef"})
    srv.start({"m": model(backend("a", U("name=a")))})
    try:
        ok = fetch(srv.port, "GET", "/admin/config", None,
                   {"Authorization": "Bearer env-token-0123456789abcdef"})
        assert ok.status == 200, ok.status
        assert not os.path.exists(os.path.join(srv.state, "admin.token"))
    finally:
        srv.stop()


@test(servers=("lighttpd",))
def lighttpd_dropin_snippet_works():
    """etc/lighttpd/15-llmproxy.conf, included by a plain lighttpd.conf, serves everything."""
    import tempfile
    from harness import free_port, write_routing
    state = tempfile.mkdtemp(prefix="llmproxy-dropin-")
    os.chmod(state, 0o700)
    port = free_port()
    snippet = open(os.path.join(ROOT, "etc", "lighttpd", "15-llmproxy.conf")).read()
    bindir = os.path.dirname(Env.server.binary)
    snippet = (snippet.replace("/usr/local/lib/llmproxy", bindir)
               .replace("/var/lib/llmproxy", state)
               .replace("/usr/local/share/llmproxy/htdocs", os.path.join(ROOT, "htdocs")))
    with open(os.path.join(state, "15-llmproxy.conf"), "w") as f:
        f.write(snippet)
    with open(os.path.join(state, "lighttpd.conf"), "w") as f:
        f.write('server.document-root = "%s"\nserver.port = %d\nserver.bind = "127.0.0.1"\n'
                'mimetype.assign = (".html" => "text/html")\n'
                'include "%s/15-llmproxy.conf"\n' % (state, port, state))
    write_routing(os.path.join(state, "dynamic_routing.json"),
                  {"m": model(backend("a", U("name=dropin")))})
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:log_path=" + os.path.join(state, "asan"))
    p = subprocess.Popen(["lighttpd", "-D", "-f", os.path.join(state, "lighttpd.conf")],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if request(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        assert request(port, "GET", "/health")[0] == 200
        r = chat(port, "m")
        assert r.status == 200 and served_by(r) == "dropin", r.body
        r = chat(port, "m", stream=True)
        assert r.events()[-1] == "[DONE]", r.body
        s, h, b = request(port, "GET", "/admin")
        assert s == 200 and b"llmproxy admin" in b, s
        # the admin program makes its token as it starts: one refused call waits for that
        assert fetch(port, "GET", "/admin/config", None, {"Authorization": "Bearer x"}).status == 401
        tok = open(os.path.join(state, "admin.token")).read().strip()
        r = fetch(port, "GET", "/admin/config", None, {"Authorization": "Bearer " + tok})
        assert r.status == 200 and "m" in r.json()["Models"], r.status
        r = fetch(port, "GET", "/metrics", None, {"Authorization": "Bearer " + tok})
        assert r.status == 200 and b'llmproxy_requests_total{model="m",status="200"} 2' in r.body, r.body[:500]
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
    assert not glob.glob(os.path.join(state, "asan*")), "sanitizer report in " + state
