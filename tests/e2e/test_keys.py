"""Client keys, limits, budgets and usage, through the web server, against the
contract (DESIGN.md part 2, "Client keys" and "Usage and cost")."""

import calendar
import contextlib
import json
import os
import re
import stat
import time

from harness import backend, chat, fetch, request
from test_admin import token
from test_proxy import Env, U, requests_for, run_parallel, served_by, test, wait_for

KEY_RE = re.compile(r"^sk-llmp-[0-9A-Za-z]{32,}$")


def kadmin(method, path="", body=None, headers=None):
    h = {"Authorization": "Bearer " + token()}
    h.update(headers or {})
    return fetch(Env.port(), method, "/admin/keys" + path, body, h)


def keys_file():
    p = os.path.join(Env.server.state, "client_keys.json")
    return open(p, "rb").read() if os.path.exists(p) else b""


@contextlib.contextmanager
def keyed():
    """Keys made inside are all deleted after: the other tests run keyless."""
    try:
        yield
    finally:
        r = kadmin("GET")
        for k in r.json()["Keys"]:
            kadmin("DELETE", "/" + k["Id"])
        assert kadmin("GET").json()["Keys"] == []


def make(**fields):
    r = kadmin("POST", "", fields)
    assert r.status == 201, (r.status, r.body[:300])
    return r.json()


def bearer(key):
    return {"Authorization": "Bearer " + key}


def usage_rows(**q):
    qs = "&".join("%s=%s" % kv for kv in q.items())
    r = fetch(Env.port(), "GET", "/admin/usage?" + qs, None, {"Authorization": "Bearer " + token()})
    assert r.status == 200, (r.status, r.body[:300])
    return r.json()["Usage"]


@test
def keys_admin_api_round_trip():
    with keyed():
        full = make(Name="team-a", Models=["m"], Rpm=60, Tpm=100000, BudgetUsd=10,
                    BudgetTokens=None, BudgetPeriod="month", ExpiresAt="2099-01-01T00:00:00Z",
                    Enabled=True)
        assert KEY_RE.match(full["Key"]), full["Key"]
        for f in ("Name", "Models", "Rpm", "Tpm", "BudgetUsd", "BudgetTokens", "BudgetPeriod",
                  "ExpiresAt", "Enabled", "Id", "CreatedAt", "Key"):
            assert f in full, (f, full)
        assert full["Models"] == ["m"] and full["Rpm"] == 60 and full["BudgetUsd"] == 10, full
        # only Name is required; the defaults
        d = make(Name="defaults")
        assert d["Models"] == [] and d["Rpm"] == 0 and d["Tpm"] == 0 and d["BudgetUsd"] is None
        assert d["BudgetPeriod"] == "month" and d["ExpiresAt"] is None and d["Enabled"] is True
        # stored hashed, 0600, the key itself nowhere
        raw = keys_file()
        assert full["Key"].encode() not in raw and d["Key"].encode() not in raw
        assert stat.S_IMODE(os.stat(os.path.join(Env.server.state, "client_keys.json")).st_mode) == 0o600
        # listed without the key, with Prefix, LastUsedAt and Usage
        keys = kadmin("GET").json()["Keys"]
        a = [k for k in keys if k["Id"] == full["Id"]][0]
        assert "Key" not in a and "Hash" not in a, a
        assert a["Prefix"] == full["Key"][:12] and a["LastUsedAt"] is None, a
        assert a["Usage"] == {"Requests": 0, "PromptTokens": 0, "CompletionTokens": 0, "CostUsd": 0}, a
        one = kadmin("GET", "/" + full["Id"])
        assert one.status == 200 and one.json()["Name"] == "team-a", one.body[:200]
        # a change names only its fields
        r = kadmin("POST", "/" + full["Id"], {"Rpm": 5, "Enabled": False})
        assert r.status == 200 and r.json()["Rpm"] == 5 and r.json()["Enabled"] is False, r.body
        assert r.json()["Tpm"] == 100000 and r.json()["Name"] == "team-a", r.body
        # unknown ids
        for method in ("GET", "POST", "DELETE"):
            r = kadmin(method, "/key_nope", {"Rpm": 1} if method == "POST" else None)
            assert r.status == 404, (method, r.status)
        r = kadmin("DELETE", "/" + d["Id"])
        assert r.status == 200 and kadmin("GET", "/" + d["Id"]).status == 404
        # the admin token is needed
        r = fetch(Env.port(), "GET", "/admin/keys", None, {})
        assert r.status == 401, r.status


@test
def keys_invalid_input_changes_nothing():
    with keyed():
        make(Name="exists")
        before = keys_file()
        cases = [
            ({}, "Name is required"),
            ({"Name": ""}, "Name must be"),
            ({"Name": "x" * 65}, "Name must be"),
            ({"Name": "bad\u0001"}, "Name must be"),
            ({"Name": "exists"}, "exists already"),
            ({"Name": "a", "Rpm": -1}, "Rpm must be"),
            ({"Name": "a", "Rpm": 1.5}, "Rpm must be"),
            ({"Name": "a", "Tpm": "10"}, "Tpm must be"),
            ({"Name": "a", "BudgetUsd": -2}, "BudgetUsd must be"),
            ({"Name": "a", "BudgetTokens": 0.5}, "BudgetTokens must be"),
            ({"Name": "a", "BudgetPeriod": "week"}, "BudgetPeriod must be"),
            ({"Name": "a", "ExpiresAt": "tomorrow"}, "ExpiresAt must be"),
            ({"Name": "a", "Enabled": "yes"}, "Enabled must be"),
            ({"Name": "a", "Models": "m"}, "Models must be"),
            ({"Name": "a", "Models": ["../x"]}, "Models[0]"),
            ({"Name": "a", "Key": "sk-llmp-mine"}, "Key cannot be set"),
            ({"Name": "a", "rpm": 5}, "unknown field 'rpm'"),
        ]
        for body, want in cases:
            r = kadmin("POST", "", body)
            assert r.status == 400, (body, r.status, r.body[:200])
            msg = r.json()["error"]["message"]
            assert want in msg, (body, msg)
        for raw in ("not json", "[1,2]", ""):
            assert kadmin("POST", "", raw).status == 400
        # a field twice: parsers disagree on which counts (uniqueness was checked on one)
        r = kadmin("POST", "", '{"Name": "fresh", "Name": "exists"}')
        assert r.status == 400 and "Name is given more than once" in r.json()["error"]["message"], r.body
        assert keys_file() == before, "a refused change changed the keys file"


@test
def keys_required_once_one_exists():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=keyed"), keys=["sk-backend-1"])]},
                 "other": {"Strategy": "Failover", "Backends": [backend("a", U("name=keyed-other"))]}})
    with keyed():
        k = make(Name="client-1", Models=["m"])["Key"]
        r = chat(Env.port(), "m")
        e = r.json()["error"]
        assert r.status == 401 and e["code"] == "invalid_api_key" and "No API key" in e["message"], r.body
        r = chat(Env.port(), "m", headers=bearer("sk-llmp-" + "x" * 40))
        assert r.status == 401 and "not valid" in r.json()["error"]["message"], r.body
        Env.up.reset()
        for h in (bearer(k), {"x-api-key": k}, {"api-key": k}):
            r = chat(Env.port(), "m", headers=h)
            assert r.status == 200 and served_by(r) == "keyed", (h.keys(), r.status, r.body[:200])
        for e in requests_for("name=keyed"):
            hd = e["headers"]
            assert hd["authorization"] == "Bearer sk-backend-1", hd
            assert "x-api-key" not in hd and "api-key" not in hd and k not in json.dumps(e), hd
        # only its models, also in the list
        r = chat(Env.port(), "other", headers=bearer(k))
        assert r.status == 403 and r.json()["error"]["code"] == "model_not_allowed", r.body
        ids = [m["id"] for m in json.loads(request(Env.port(), "GET", "/v1/models", None, bearer(k))[2])["data"]]
        assert ids == ["m"], ids
        assert request(Env.port(), "GET", "/health")[0] == 200, "health never needs a key"
        # disabled, expired
        kid = [x for x in kadmin("GET").json()["Keys"] if x["Name"] == "client-1"][0]["Id"]
        kadmin("POST", "/" + kid, {"Enabled": False})
        r = chat(Env.port(), "m", headers=bearer(k))
        assert r.status == 401 and "disabled" in r.json()["error"]["message"], r.body
        kadmin("POST", "/" + kid, {"Enabled": True, "ExpiresAt": "2020-01-01T00:00:00Z"})
        r = chat(Env.port(), "m", headers=bearer(k))
        assert r.status == 401 and "expired" in r.json()["error"]["message"], r.body
        kadmin("POST", "/" + kid, {"ExpiresAt": None})
        assert chat(Env.port(), "m", headers=bearer(k)).status == 200
    # keys gone: keyless again
    assert chat(Env.port(), "m").status == 200


@test
def rpm_holds_across_processes_with_headers():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=rpm+delay=20"))]}})
    with keyed():
        k = make(Name="rpm", Rpm=6)["Key"]
        got = run_parallel(12, lambda i: chat(Env.port(), "m", headers=bearer(k)))
        ok = [r for r in got if r.status == 200]
        refused = [r for r in got if r.status == 429]
        assert len(ok) == 6 and len(refused) == 6, [r.status for r in got]
        for r in refused:
            e = r.json()["error"]
            assert e["code"] == "rate_limit_exceeded", e
            assert int(r.headers["retry-after"][0]) >= 1, r.headers
            # as OpenAI does, a refusal says the key's limits too
            assert r.headers["x-ratelimit-limit-requests"] == ["6"], r.headers
            assert r.headers["x-ratelimit-remaining-requests"] == ["0"], r.headers
        def lines():
            return re.findall(r"llmproxy\[(\d+)\] req=\S+ /chat/completions model=m ",
                              Env.server.log()[-20000:])
        wait_for(lambda: len(lines()) >= 12, 3)  # each written just after its answer
        pids = set(lines())
        assert len(pids) >= min(2, Env.server.procs), pids
        r = ok[0]
        assert r.headers["x-ratelimit-limit-requests"] == ["6"], r.headers
        remaining = sorted(int(x.headers["x-ratelimit-remaining-requests"][0]) for x in ok)
        assert remaining == [0, 1, 2, 3, 4, 5], remaining
        assert re.match(r"^\d+(ms|s|m\d+s)$", r.headers["x-ratelimit-reset-requests"][0]), r.headers
        # the upstream's own rate limit headers never reach a keyed client
        assert "x-ratelimit-remaining-tokens" not in r.headers
        assert r.headers["x-ratelimit-remaining-requests"] != ["99"]


@test
def tpm_and_token_budget():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=tpm+ptok=10+ctok=20"))]}})
    with keyed():
        k = make(Name="tpm", Tpm=50)["Key"]
        assert chat(Env.port(), "m", headers=bearer(k)).status == 200  # 30 of 50
        r = chat(Env.port(), "m", headers=bearer(k))                   # 20 left: admitted
        assert r.status == 200 and r.headers["x-ratelimit-limit-tokens"] == ["50"], r.headers
        r = chat(Env.port(), "m", headers=bearer(k))                   # overdrawn: refused
        assert r.status == 429 and r.json()["error"]["code"] == "rate_limit_exceeded", r.body
        b = make(Name="budget", BudgetTokens=50)["Key"]
        assert chat(Env.port(), "m", headers=bearer(b)).status == 200
        assert chat(Env.port(), "m", headers=bearer(b)).status == 200  # 30 < 50: admitted, overshoots
        r = chat(Env.port(), "m", headers=bearer(b))
        assert r.status == 429 and r.json()["error"]["code"] == "insufficient_quota", r.body
        # a month's budget comes back on the 1st: Retry-After says when; SDKs must not retry
        t = time.gmtime()
        first = calendar.timegm((t.tm_year + (t.tm_mon == 12), t.tm_mon % 12 + 1, 1, 0, 0, 0))
        assert abs(int(r.headers["retry-after"][0]) - (first - time.time())) < 5, r.headers
        assert r.headers["x-should-retry"] == ["false"], r.headers
        tot = make(Name="budget-total", BudgetTokens=0, BudgetPeriod="total")["Key"]
        r = chat(Env.port(), "m", headers=bearer(tot))
        assert r.status == 429 and r.json()["error"]["code"] == "insufficient_quota", r.body
        assert "retry-after" not in r.headers and r.headers["x-should-retry"] == ["false"], r.headers
        info = [x for x in kadmin("GET").json()["Keys"] if x["Name"] == "budget"][0]
        assert info["Usage"]["Requests"] == 2 and info["Usage"]["PromptTokens"] == 20, info["Usage"]
        assert info["Usage"]["CompletionTokens"] == 40 and info["LastUsedAt"] is not None, info


@test
def usage_accounted_with_costs():
    price = {"InputCostPerMTok": 2.0, "OutputCostPerMTok": 8.0, "CachedInputCostPerMTok": 0.5}
    b1 = backend("priced", U("name=usage-priced+ptok=1000+ctok=500+cached=200"))
    b1.update(price)
    Env.routing({"um": {"Strategy": "Failover", "Backends": [b1]}})
    with keyed():
        k = make(Name="usage-key")["Key"]
        for _ in range(3):
            assert chat(Env.port(), "um", headers=bearer(k)).status == 200
        r = chat(Env.port(), "um", headers=bearer(k), stream=True)
        assert r.status == 200 and r.events()[-1] == "[DONE]"
        cost1 = (800 * 2.0 + 200 * 0.5 + 500 * 8.0) / 1e6

        def rows():
            return [x for x in usage_rows(group_by="key,model,backend,day") if x.get("Key") == "usage-key"]
        assert wait_for(lambda: rows() and rows()[0]["Requests"] == 4, 3), usage_rows(group_by="key,model")
        row = rows()[0]
        assert row["Model"] == "um" and row["Backend"] == "priced", row
        assert row["PromptTokens"] == 4000 and row["CompletionTokens"] == 2000, row
        assert abs(row["CostUsd"] - 4 * cost1) < 1e-9, (row["CostUsd"], 4 * cost1)
        assert row["Day"] == time.strftime("%Y-%m-%d", time.gmtime()) and row["Errors"] == 0, row
        r = fetch(Env.port(), "GET", "/admin/requests?limit=2", None, {"Authorization": "Bearer " + token()})
        reqs = r.json()["Requests"]
        assert len(reqs) == 2 and reqs[0]["Stream"] is True and reqs[1]["Stream"] is False, reqs
        for f in ("Time", "RequestId", "Key", "Model", "Backend", "Status", "Stream", "PromptTokens",
                  "CompletionTokens", "CostUsd", "Ms", "TtfbMs"):
            assert f in reqs[0], (f, reqs[0])
        assert reqs[0]["Key"] == "usage-key" and reqs[0]["Status"] == 200, reqs[0]
        assert abs(reqs[0]["CostUsd"] - cost1) < 1e-9 and reqs[0]["TtfbMs"] > 0, reqs[0]
        for bad in ("from=2026-13-01", "group_by=week", "to=x"):
            assert fetch(Env.port(), "GET", "/admin/usage?" + bad, None,
                         {"Authorization": "Bearer " + token()}).status == 400, bad


@test
def stream_usage_asked_for_and_removed():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=su+chunks=3"))]},
                 "nsu": {"Strategy": "Failover", "Backends": [dict(backend("a", U("name=su-off+chunks=3")),
                                                                   StreamUsage=False)]}})
    Env.up.reset()
    r = chat(Env.port(), "m", stream=True)
    sent = json.loads(requests_for("name=su+")[-1]["body"])
    assert sent["stream_options"] == {"include_usage": True}, sent
    ev = r.events()
    assert ev[-1] == "[DONE]" and len(ev) == 4, ev
    for e in ev[:-1]:
        assert json.loads(e)["choices"], "a chunk with empty choices reached the client: %s" % e
    # asked for: the usage chunk comes, once, unchanged
    r = chat(Env.port(), "m", stream=True, extra={"stream_options": {"include_usage": True}})
    ev = r.events()
    usage = [e for e in ev if '"usage": {' in e]
    assert len(usage) == 1 and json.loads(usage[0])["choices"] == [], ev
    # a backend marked StreamUsage false is not asked
    Env.up.reset()
    chat(Env.port(), "nsu", stream=True)
    assert "stream_options" not in json.loads(requests_for("name=su-off")[-1]["body"])


@test
def budget_survives_restart_and_lost_state():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=bud+ptok=10+ctok=20"))]}})
    srv = Env.server_class(Env.server.binary)
    srv.start({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=bud+ptok=10+ctok=20"))]}})
    try:
        tok = open(os.path.join(srv.state, "admin.token")).read().strip() if os.path.exists(
            os.path.join(srv.state, "admin.token")) else None
        if tok is None:
            fetch(srv.port, "GET", "/admin/keys", None, {"Authorization": "Bearer x"})
            tok = open(os.path.join(srv.state, "admin.token")).read().strip()
        r = fetch(srv.port, "POST", "/admin/keys", {"Name": "b", "BudgetTokens": 60, "BudgetPeriod": "day"},
                  {"Authorization": "Bearer " + tok})
        k = r.json()["Key"]
        assert chat(srv.port, "m", headers=bearer(k)).status == 200
        assert chat(srv.port, "m", headers=bearer(k)).status == 200  # 60 used
        time.sleep(1.5)  # the usage writer stores it within a second
        srv.stop()
        srv.start()
        r = chat(srv.port, "m", headers=bearer(k))
        assert r.status == 429 and r.json()["error"]["code"] == "insufficient_quota", r.body
        srv.stop()
        os.unlink(os.path.join(srv.state, "runtime.state"))  # counters lost: usage.db remembers
        srv.start()
        r = chat(srv.port, "m", headers=bearer(k))
        assert r.status == 429 and r.json()["error"]["code"] == "insufficient_quota", r.body
    finally:
        srv.stop()
    assert not srv.sanitizer_reports(), "\n".join(srv.sanitizer_reports())[-3000:]


@test
def budget_period_change_counts_what_was_spent():
    """Changing a key's BudgetPeriod: its Usage and its budget cover the new
    period's spend so far (from usage.db), not zero."""
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=per+ptok=10+ctok=20"))]}})
    with keyed():
        made = make(Name="period-key", BudgetPeriod="month")
        k = made["Key"]
        for _ in range(2):
            assert chat(Env.port(), "m", headers=bearer(k)).status == 200

        def used():
            return kadmin("GET", "/" + made["Id"]).json()["Usage"]
        assert used()["Requests"] == 2, used()
        # the usage writer stores a finished request within a second
        assert wait_for(lambda: [x for x in usage_rows(group_by="key") if x.get("Key") == "period-key"
                                 and x["Requests"] == 2], 3)
        r = kadmin("POST", "/" + made["Id"], {"BudgetPeriod": "day", "BudgetTokens": 60})
        assert r.status == 200 and r.json()["Usage"]["Requests"] == 2, r.body
        assert used() == {"Requests": 2, "PromptTokens": 20, "CompletionTokens": 40, "CostUsd": 0}, used()
        r = chat(Env.port(), "m", headers=bearer(k))
        assert r.status == 429 and r.json()["error"]["code"] == "insufficient_quota", r.body


@test
def broken_keys_file_never_means_keyless():
    """A keys file that exists but could never be used (invalid, a newer
    version's fields) refuses /v1 with 503: it must not fall back to keyless."""
    srv = Env.server_class(Env.server.binary)
    srv.start({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=brk"))]}})
    try:
        assert chat(srv.port, "m").status == 200  # keyless, from loopback
        srv.stop()
        path = os.path.join(srv.state, "client_keys.json")
        with open(path, "w") as f:
            f.write('{"Keys": [{"Id": "key_x", "Name": "x", "Hash": "00", "Rpm": 2000000000}]}')
        os.chmod(path, 0o600)
        srv.start()
        r = chat(srv.port, "m")
        assert r.status == 503 and r.json()["error"]["code"] == "client_keys_unavailable", r.body
        assert "client_keys.json" in srv.log()
        os.unlink(path)  # no file: keyless again, at once
        assert chat(srv.port, "m").status == 200
    finally:
        srv.stop()
    assert not srv.sanitizer_reports(), "\n".join(srv.sanitizer_reports())[-3000:]


@test
def stream_fields_that_could_hide_usage_are_refused():
    """Parsers disagree on duplicated keys and lax booleans: a body whose stream
    or include_usage llmproxy and a backend could read differently gets 400
    (else usage could go unreported, and unpaid)."""
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=dupstream"))]}})
    Env.up.reset()
    for body in ('{"model":"m","stream":true,"stream":false,"messages":[]}',
                 '{"model":"m","stream":1,"messages":[]}',
                 '{"model":"m","stream":true,"stream_options":{"include_usage":true,'
                 '"include_usage":false},"messages":[]}'):
        r = request(Env.port(), "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        assert r[0] == 400, (body, r[0], r[2][:200])
        e = json.loads(r[2])["error"]
        assert e["param"] == "stream" and e["type"] == "invalid_request_error", e
    assert requests_for("name=dupstream") == []


@test
def answers_without_usage_are_estimated_never_free():
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=nouse+nousage=1"))]}})
    with keyed():
        made = make(Name="nouse-key", BudgetTokens=1)
        k = made["Key"]
        r = chat(Env.port(), "m", headers=bearer(k))
        assert r.status == 200 and "usage" not in r.json(), r.body
        assert wait_for(lambda: re.search(r"model=m .*status=200 .*usage=estimated",
                                          Env.server.log()[-5000:]), 3)
        u = kadmin("GET", "/" + made["Id"]).json()["Usage"]
        assert u["Requests"] == 1 and u["PromptTokens"] > 0 and u["CompletionTokens"] > 0, u
        r = chat(Env.port(), "m", headers=bearer(k))
        assert r.status == 429 and r.json()["error"]["code"] == "insufficient_quota", r.body


@test
def cli_key_commands():
    """--add-key / --list-keys / --delete-key on the running instance's state dir;
    run by root on a dir of another account, the files stay that account's."""
    import pwd
    import subprocess
    import tempfile
    admin = os.path.join(os.path.dirname(Env.server.binary), "llmproxy-admin.fcgi")

    def cli(state, *args):
        env = dict(os.environ, LLMPROXY_STATE_DIR=state, ASAN_OPTIONS="detect_leaks=1")
        return subprocess.run([admin] + list(args), capture_output=True, text=True, env=env, timeout=30)
    Env.routing({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=cli-keys"))]}})
    with keyed():
        p = cli(Env.server.state, "--add-key", "cli-team", "--rpm", "5", "--models", "m,other",
                "--budget-usd", "2.5", "--period", "day")
        assert p.returncode == 0, p.stderr
        key = p.stdout.strip()
        assert KEY_RE.match(key) and "shown this once" in p.stderr, (p.stdout, p.stderr)
        made = [k for k in kadmin("GET").json()["Keys"] if k["Name"] == "cli-team"][0]
        assert made["Rpm"] == 5 and made["Models"] == ["m", "other"] and made["BudgetUsd"] == 2.5 \
            and made["BudgetPeriod"] == "day", made
        assert chat(Env.port(), "m", headers=bearer(key)).status == 200
        p = cli(Env.server.state, "--list-keys")
        assert p.returncode == 0 and "cli-team" in p.stdout and made["Id"] in p.stdout, p.stdout
        assert key not in p.stdout and key[12:] not in p.stdout + p.stderr
        bad = cli(Env.server.state, "--add-key", "cli-team")
        assert bad.returncode != 0 and "exists" in bad.stderr, bad.stderr
        p = cli(Env.server.state, "--delete-key", made["Id"])
        assert p.returncode == 0, p.stderr
        assert chat(Env.port(), "m", headers=bearer(key)).status == 200  # no key left: keyless again
        assert not [k for k in kadmin("GET").json()["Keys"] if k["Name"] == "cli-team"]
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        d = tempfile.mkdtemp(prefix="llmproxy-cli-owner-")
        os.chmod(d, 0o755)
        state = os.path.join(d, "state")
        os.mkdir(state, 0o700)
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        p = cli(state, "--add-key", "owned")
        assert p.returncode == 0, p.stderr
        for f in os.listdir(state):
            st = os.stat(os.path.join(state, f))
            assert st.st_uid == nobody.pw_uid, (f, st.st_uid)
        assert stat.S_IMODE(os.stat(os.path.join(state, "client_keys.json")).st_mode) == 0o600
        p = cli(state, "--list-keys")
        assert p.returncode == 0 and "owned" in p.stdout, p.stderr
        for f in os.listdir(state):
            assert os.stat(os.path.join(state, f)).st_uid == nobody.pw_uid, f
