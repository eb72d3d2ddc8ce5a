"""GET /metrics through the web server, against the contract (DESIGN.md part 2,
"Metrics and live health"): Prometheus text, summed over every process."""

import os
import time
import re
import shutil
import subprocess
import tempfile

from harness import backend, chat, fetch, request
from test_admin import token
from test_keys import bearer, keyed, make
from test_proxy import Env, U, requests_for, run_parallel, test

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(tok=None, port=None):
    r = fetch(port or Env.port(), "GET", "/metrics", None, {"Authorization": "Bearer " + (tok or token())})
    assert r.status == 200, (r.status, r.body[:300])
    assert r.headers["content-type"][0].startswith("text/plain; version=0.0.4"), r.headers
    return r.body.decode()


def samples(text):
    """{(name, frozenset(labels)): value} of a scrape."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        key = (m.group(1), labels)
        assert key not in out, "duplicate series: %s" % line
        out[key] = float(m.group(4))
    return out


def value(s, name, **labels):
    return s.get((name, frozenset(labels.items())), 0.0)


def promtool_ok(text):
    tool = shutil.which("promtool")
    assert tool, "promtool (Debian's prometheus package) is missing"
    p = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]


@test
def metrics_counts_requests_attempts_tokens_and_histograms():
    Env.routing({"mx": {"Strategy": "Failover", "Backends": [
        backend("down", U("name=mx-down+status=503")),
        backend("up", U("name=mx-up+ptok=7+ctok=3"), keys=["sk-a", "sk-b"])]}})
    r = fetch(Env.port(), "GET", "/metrics", None, {})
    assert r.status == 401 and "www-authenticate" in r.headers, (r.status, r.headers)
    assert fetch(Env.port(), "POST", "/metrics", "", {"Authorization": "Bearer " + token()}).status == 405
    r = fetch(Env.port(), "HEAD", "/metrics", None, {"Authorization": "Bearer " + token()})
    assert r.status == 200 and r.body == b"" and r.headers["content-type"][0].startswith("text/plain"), r
    before = samples(scrape())
    # 8 requests at once over both processes, one stream, one unknown model
    got = run_parallel(8, lambda i: chat(Env.port(), "mx", stream=(i == 0)))
    assert [x.status for x in got] == [200] * 8, [x.status for x in got]
    assert chat(Env.port(), "no-such-model").status == 404
    text = scrape()
    promtool_ok(text)
    s = samples(text)

    def delta(name, **labels):
        return value(s, name, **labels) - value(before, name, **labels)
    assert delta("llmproxy_requests_total", model="mx", status="200") == 8, text[:3000]
    assert delta("llmproxy_requests_total", model="", status="404") == 1
    ok = delta("llmproxy_backend_attempts_total", model="mx", backend="up", outcome="ok")
    failed = delta("llmproxy_backend_attempts_total", model="mx", backend="down", outcome="server_error")
    assert ok == 8 and failed >= 3, (ok, failed)
    assert delta("llmproxy_tokens_total", model="mx", backend="up", key="", type="prompt") == 56
    assert delta("llmproxy_tokens_total", model="mx", backend="up", key="", type="completion") == 24
    # histograms: cumulative buckets, +Inf == count, the sum is positive
    for h in ("llmproxy_request_duration_seconds", "llmproxy_time_to_first_byte_seconds"):
        buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in s.items()
                          if k[0] == h + "_bucket" and dict(k[1]).get("model") == "mx"))
        assert buckets and buckets[-1][0] == float("inf"), buckets
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), counts
        assert buckets[-1][1] == value(s, h + "_count", model="mx") and value(s, h + "_sum", model="mx") > 0
        assert delta(h + "_count", model="mx") == 8, (h, delta(h + "_count", model="mx"))
    assert value(s, "llmproxy_backend_circuit_open", model="mx", backend="down") == 1, text[:2000]
    assert value(s, "llmproxy_backend_circuit_open", model="mx", backend="up") == 0
    assert ("llmproxy_key_cooldown_seconds", frozenset(
        {"model": "mx", "backend": "up", "key_index": "1"}.items())) in s
    assert value(s, "llmproxy_active_requests") >= 0 and value(s, "llmproxy_config_valid") == 1


@test
def metrics_cost_and_key_labels():
    price = {"InputCostPerMTok": 1000.0, "OutputCostPerMTok": 2000.0}
    b = backend("priced", U("name=mx-cost+ptok=10+ctok=20"))
    b.update(price)
    Env.routing({"mc": {"Strategy": "Failover", "Backends": [b]}})
    with keyed():
        k = make(Name='team "a"\\b')["Key"]
        before = samples(scrape())
        for _ in range(3):
            assert chat(Env.port(), "mc", headers=bearer(k)).status == 200
        text = scrape()
        promtool_ok(text)
        s = samples(text)
        lab = {"model": "mc", "backend": "priced", "key": 'team \\"a\\"\\\\b'}
        cost = value(s, "llmproxy_cost_usd_total", **lab) - value(before, "llmproxy_cost_usd_total", **lab)
        assert abs(cost - 3 * 0.05) < 1e-9, (cost, text[:2000])
        assert value(s, "llmproxy_tokens_total", type="prompt", **lab) - \
            value(before, "llmproxy_tokens_total", type="prompt", **lab) == 30


@test
def metrics_key_cooldown_and_rate_limited_attempts():
    Env.routing({"mk": {"Strategy": "Failover", "Backends": [
        backend("rl", U("name=mk-rl+status=429+ra=120+onlykey=k1"), keys=["k1", "k2"])]}})
    for _ in range(2):
        assert chat(Env.port(), "mk").status == 200
    s = samples(scrape())
    cool = value(s, "llmproxy_key_cooldown_seconds", model="mk", backend="rl", key_index="0")
    assert 100 < cool <= 120, cool
    assert value(s, "llmproxy_key_cooldown_seconds", model="mk", backend="rl", key_index="1") == 0
    assert value(s, "llmproxy_backend_attempts_total", model="mk", backend="rl", outcome="rate_limited") >= 1


@test
def metrics_token_from_env():
    """LLMPROXY_METRICS_TOKEN: a scraper's own token, that opens /metrics and nothing else."""
    srv = Env.server_class(Env.server.binary, env={"LLMPROXY_METRICS_TOKEN": "scrape-token-123"})
    srv.start({"m": {"Strategy": "Failover", "Backends": [backend("a", U("name=mt"))]}})
    try:
        assert chat(srv.port, "m").status == 200
        s = samples(scrape("scrape-token-123", srv.port))
        assert value(s, "llmproxy_requests_total", model="m", status="200") == 1, s
        r = fetch(srv.port, "GET", "/admin/config", None, {"Authorization": "Bearer scrape-token-123"})
        assert r.status == 401, r.status
        assert fetch(srv.port, "GET", "/metrics", None, {"Authorization": "Bearer wrong"}).status == 401
    finally:
        srv.stop()
    assert not srv.sanitizer_reports(), "\n".join(srv.sanitizer_reports())[-3000:]


@test
def admin_health_is_the_routers_view():
    Env.routing({"hx": {"Strategy": "Failover", "Backends": [
        backend("flaky", U("name=hx-flaky+status=503")),
        backend("good", U("name=hx-good+status=429+ra=60+onlykey=hk0"), keys=["hk0", "hk1"])]}})
    h = {"Authorization": "Bearer " + token()}
    assert fetch(Env.port(), "GET", "/admin/health", None, {}).status == 401
    assert fetch(Env.port(), "POST", "/admin/health", "{}", h).status == 405
    assert fetch(Env.port(), "GET", "/admin/health/x", None, h).status == 404
    for _ in range(3):
        assert chat(Env.port(), "hx").status == 200
    r = fetch(Env.port(), "GET", "/admin/health", None, h)
    assert r.status == 200, r.body
    flaky, good = r.json()["Models"]["hx"]["Backends"]
    assert flaky["Name"] == "flaky" and flaky["Circuit"] == "open", flaky
    assert flaky["ConsecutiveFailures"] >= 3 and 0 < flaky["OpenForMs"] <= 5000, flaky
    assert flaky["LastError"] == "server_error (HTTP 503)" and flaky["LastErrorAt"], flaky
    assert flaky["LastSuccessAt"] is None and all(k["CoolingForMs"] == 0 for k in flaky["Keys"]), flaky
    assert good["Circuit"] == "closed" and good["LastSuccessAt"] is not None, good
    k0, k1 = good["Keys"]
    assert k0["Index"] == 0 and k0["Reason"] == "rate_limited" and 55000 < k0["CoolingForMs"] <= 60000, k0
    assert k1 == {"Index": 1, "CoolingForMs": 0, "Reason": None}, k1
    # the last minutes, for the status page
    fr, gr = flaky["Recent"], good["Recent"]
    assert fr["ErrorRate"] == 1 and fr["LatencyP50Ms"] is None and sum(fr["PerMinute"]) >= 3, fr
    assert len(gr["PerMinute"]) == 60 and gr["PerMinute"][-1] + gr["PerMinute"][-2] >= 4, gr
    assert 0 < gr["ErrorRate"] < 1 and gr["RequestsPerMinute"] > 0, gr
    assert 0 < gr["LatencyP50Ms"] <= gr["LatencyP95Ms"] and 0 < gr["TtfbP50Ms"] <= gr["TtfbP95Ms"], gr
    # the router agrees: the open circuit and the cooling key are skipped
    Env.up.reset()
    assert chat(Env.port(), "hx").status == 200
    assert requests_for("name=hx-flaky") == [] and len(requests_for("name=hx-good")) == 1


@test
def json_log_lines():
    """LLMPROXY_LOG_FORMAT=json: each request's one line is one JSON object with
    the fields of the text line; the programs' other lines are JSON too."""
    import json
    srv = Env.server_class(Env.server.binary, env={"LLMPROXY_LOG_FORMAT": "json"})
    srv.start({"jl": {"Strategy": "Failover", "Backends": [
        backend("bad", U("name=jl-bad+status=503")), backend("good", U("name=jl-good"))]}})
    try:
        assert chat(srv.port, "jl").status == 200
        assert chat(srv.port, "jl", stream=True).status == 200
        assert chat(srv.port, 'no "such" model').status == 404
        assert request(srv.port, "GET", "/health")[0] == 200
        time.sleep(0.3)
        log = srv.log()
    finally:
        srv.stop()
    objs = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert not re.search(r"llmproxy\[\d+\] req=", log), log[-2000:]
    reqs = [o for o in objs if "req" in o]
    chats = [o for o in reqs if o.get("model") == "jl"]
    assert len(chats) == 2, reqs
    first = chats[0]
    assert first["path"] == "/chat/completions" and first["status"] == 200 and first["stream"] is False
    assert [a["backend"] for a in first["attempts"]] == ["bad", "good"], first
    assert first["attempts"][0]["outcome"] == "503" and first["attempts"][1]["outcome"] == "200"
    assert isinstance(first["ms"], float) and first["bytes"] > 0 and first["time"].endswith("Z")
    assert chats[1]["stream"] is True
    missing = [o for o in reqs if o.get("model") == 'no "such" model']
    assert len(missing) == 1 and missing[0]["status"] == 404, reqs
    assert any(o.get("path") == "/health" and o.get("method") == "GET" for o in reqs), reqs
    assert any(o.get("level") == "info" and "msg" in o for o in objs), objs[:5]


@test(servers=("lighttpd",))
def real_prometheus_scrapes_and_answers_promql():
    """Debian's Prometheus scrapes /metrics (with the token, every second) and a
    PromQL query over what it stored gives the count of requests made."""
    import json
    import urllib.parse
    import urllib.request
    from harness import free_port
    prom = shutil.which("prometheus")
    assert prom, "prometheus (Debian package) is missing"
    Env.routing({"pq": {"Strategy": "RoundRobin", "Backends": [
        backend("a", U("name=pq-a")), backend("b", U("name=pq-b"))]}})
    for _ in range(7):
        assert chat(Env.port(), "pq").status == 200
    work = tempfile.mkdtemp(prefix="llmproxy-prom-")
    port = free_port()
    with open(os.path.join(work, "prometheus.yml"), "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: llmproxy\n    authorization:\n"
                "      credentials: %s\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n"
                % (token(), Env.port()))
    log = open(os.path.join(work, "prometheus.log"), "wb")
    p = subprocess.Popen([prom, "--config.file=" + os.path.join(work, "prometheus.yml"),
                          "--storage.tsdb.path=" + os.path.join(work, "data"),
                          "--web.listen-address=127.0.0.1:%d" % port], stdout=log, stderr=log,
                         start_new_session=True)
    try:
        def query(q):
            url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (port, urllib.parse.quote(q))
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    res = json.load(r)["data"]["result"]
            except OSError:
                return None
            return float(res[0]["value"][1]) if res else None
        deadline = time.time() + 30
        got = None
        while time.time() < deadline:
            got = query('sum(llmproxy_requests_total{job="llmproxy",model="pq",status="200"})')
            if got == 7:
                break
            time.sleep(0.5)
        assert got == 7, (got, open(os.path.join(work, "prometheus.log")).read()[-2000:])
        up = query('up{job="llmproxy"}')
        assert up == 1, up
        per = query('sum by (backend) (llmproxy_backend_attempts_total{model="pq",outcome="ok"})')
        assert per is not None
        for _ in range(3):
            assert chat(Env.port(), "pq").status == 200
        deadline = time.time() + 15
        while time.time() < deadline and got != 10:
            got = query('sum(llmproxy_requests_total{model="pq",status="200"})')
            time.sleep(0.5)
        assert got == 10, got
    finally:
        os.killpg(p.pid, 15)
        p.wait(timeout=10)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


@test
def metrics_outcomes_of_streams_and_a_big_scrape():
    """An attempt broken mid-stream counts as broken (not ok); a stream that
    ends without a blank line as ok; a scrape of 100 models x 3 backends x 3
    keys is whole and passes promtool."""
    models = {"mo": {"Strategy": "Failover", "Backends": [backend("brk", U("name=mo-brk+chunks=5+drop=2"))]},
              "mk": {"Strategy": "Failover", "Backends": [backend("ok", U("name=mo-ok+chunks=3"))]}}
    for i in range(100):
        models["big-%03d-%s" % (i, "x" * 40)] = {"Strategy": "RoundRobin", "Backends": [
            backend("backend-%d-%s" % (j, "y" * 30), U("name=big"), keys=["k%d" % k for k in range(3)])
            for j in range(3)]}
    Env.routing(models)
    r = chat(Env.port(), "mo", stream=True)
    assert r.status == 200 and '"error"' in r.events()[-1], r.body
    assert chat(Env.port(), "mk", stream=True).status == 200
    for i in range(0, 100, 7):
        assert chat(Env.port(), "big-%03d-%s" % (i, "x" * 40)).status == 200
    text = scrape()
    assert len(text) > 65536, len(text)
    promtool_ok(text)
    s = samples(text)
    assert value(s, "llmproxy_backend_attempts_total", model="mo", backend="brk", outcome="broken") == 1, \
        [k for k in s if dict(k[1]).get("model") == "mo"]
    assert value(s, "llmproxy_backend_attempts_total", model="mo", backend="brk", outcome="ok") == 0
    assert value(s, "llmproxy_backend_attempts_total", model="mk", backend="ok", outcome="ok") == 1
    cool = [k for k in s if k[0] == "llmproxy_key_cooldown_seconds"]
    assert len(cool) >= 900, len(cool)
    assert text.endswith("\n") and text.rstrip("\n").split("\n")[-1].startswith("llmproxy_state_names_refused_total ")
