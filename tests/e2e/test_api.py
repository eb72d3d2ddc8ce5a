"""More of the API (DESIGN.md part 2, "More of the API"), first part: the JSON
endpoints routed by model like chat, and speech's binary answer relayed as it
arrives."""

import json
import re

from harness import backend, fetch
from test_proxy import Env, U, log_mark, requests_for, served_by, test, wait_for


def post(path, body, headers=None):
    return fetch(Env.port(), "POST", path, body, headers)


@test
def json_endpoints_route_map_and_fail_over():
    for path, body in (("/v1/moderations", {"model": "mod", "input": "hello"}),
                       ("/v1/rerank", {"model": "mod", "query": "q", "documents": ["a", "b"]}),
                       ("/v1/images/generations", {"model": "mod", "prompt": "a cat", "n": 1})):
        down = backend("down", U("name=api-down+status=503"))
        good = dict(backend("good", U("name=api-good")), BackendModelName="upstream-name")
        Env.routing({"mod": {"Strategy": "Failover", "Backends": [down, good]}})
        Env.up.reset()
        r = post(path, body)
        assert r.status == 200 and served_by(r) == "api-good", (path, r.status, r.body[:300])
        got = requests_for("name=api-good")
        assert len(got) == 1 and got[0]["path"].endswith(path[3:]), (path, got)
        sent = json.loads(got[0]["body"])
        assert sent["model"] == "upstream-name" and {k: v for k, v in sent.items() if k != "model"} == \
            {k: v for k, v in body.items() if k != "model"}, (path, sent)
        assert len(requests_for("name=api-down")) == 1
        # errors stay in the OpenAI shape, refusals before any backend
        r = post(path, {"input": "no model"})
        assert r.status == 400 and r.json()["error"]["param"] == "model", (path, r.body)
        r = post(path, dict(body, model="nope"))
        assert r.status == 404 and r.json()["error"]["code"] == "model_not_found", (path, r.body)
        assert fetch(Env.port(), "GET", path).status == 405


@test
def speech_binary_answer_relayed_as_it_arrives():
    Env.routing({"tts": {"Strategy": "Failover", "Backends": [
        backend("down", U("name=tts-down+status=500")),
        backend("good", U("name=tts-good+chunks=5+gap=150"))]}})
    Env.up.reset()
    mark = log_mark(Env.server)
    r = post("/v1/audio/speech", {"model": "tts", "input": "Hello there", "voice": "alloy"})
    assert r.status == 200 and r.headers["content-type"] == ["audio/mpeg"], (r.status, r.headers)
    piece = bytes(range(256)) * 4
    assert r.body.count(b"\xff\xfb") == 5 and r.body.count(piece) == 5, len(r.body)
    assert b"tts-good" in r.body
    # relayed as it came: the first piece long before the last
    first = next(t for t, c in r.chunks if c)
    assert r.chunks[-1][0] - first > 0.4, [round(t - r.t_sent, 3) for t, _ in r.chunks]
    assert len(requests_for("name=tts-down")) == 1
    # audio is not tokens: nothing estimated from its bytes
    # (a request's log line is written just after its answer)
    assert wait_for(lambda: "/audio/speech model=tts" in Env.server.log()[mark:], 3)
    log = Env.server.log()[mark:]
    line = [x for x in log.splitlines() if "/audio/speech model=tts" in x][-1]
    assert "status=200" in line and "usage=estimated" not in line, line
    assert re.search(r"attempts=\[down#0:500:\S+ good#0:200:", line), line


@test
def model_fallbacks():
    from test_admin import token
    Env.routing({
        "primary": {"Strategy": "Failover", "Fallbacks": ["second", "third"],
                    "Backends": [backend("p1", U("name=fb-p1+status=503")), backend("p2", U("name=fb-p2+status=500"))]},
        "second": {"Strategy": "Failover", "Fallbacks": ["third"],
                   "Backends": [backend("s1", U("name=fb-s1+status=429+ra=30"))]},
        "third": {"Strategy": "Failover", "Backends": [backend("t1", U("name=fb-t1"))]},
        "clienterr": {"Strategy": "Failover", "Fallbacks": ["third"],
                      "Backends": [backend("c1", U("name=fb-c1+status=400"))]},
        "dead1": {"Strategy": "Failover", "Fallbacks": ["dead2"],
                  "Backends": [backend("d1", U("name=fb-d1+status=503"))]},
        "dead2": {"Strategy": "Failover", "Backends": [backend("d2", U("name=fb-d2+status=502"))]},
        # more keys than LLMPROXY_MAX_ATTEMPTS, every one rate limited
        "manykeys": {"Strategy": "Failover", "Fallbacks": ["third"],
                     "Backends": [backend("mk", U("name=fb-mk+status=429+ra=30"),
                                          keys=["mk-%02d" % i for i in range(20)])]}})
    Env.up.reset()
    mark = log_mark(Env.server)
    r = fetch(Env.port(), "POST", "/v1/chat/completions",
              {"model": "primary", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200 and served_by(r) == "fb-t1", (r.status, r.body[:300])
    assert r.headers["x-llmproxy-model"] == ["third"], r.headers
    sent = json.loads(requests_for("name=fb-t1")[-1]["body"])
    assert sent["model"] == "third", sent  # the fallback's own name goes upstream
    assert [len(requests_for("name=fb-" + n)) for n in ("p1", "p2", "s1")] == [1, 1, 1]
    assert wait_for(lambda: "model=primary" in Env.server.log()[mark:], 3)
    line = [x for x in Env.server.log()[mark:].splitlines() if "model=primary" in x][-1]
    assert "fallback=second" in line and "fallback=third" in line and "status=200" in line, line
    # a stream falls back the same way
    r = fetch(Env.port(), "POST", "/v1/chat/completions",
              {"model": "primary", "stream": True, "messages": []})
    assert r.status == 200 and r.events()[-1] == "[DONE]" and r.headers["x-llmproxy-model"] == ["third"]
    # a fallback has attempts of its own, after a model used up LLMPROXY_MAX_ATTEMPTS
    r = fetch(Env.port(), "POST", "/v1/chat/completions", {"model": "manykeys", "messages": []})
    assert r.status == 200 and r.headers["x-llmproxy-model"] == ["third"], (r.status, r.body[:300])
    # when the fallbacks fail too, the verdict says so
    r = fetch(Env.port(), "POST", "/v1/chat/completions", {"model": "dead1", "messages": []})
    assert r.status == 502 and "'dead1' or its 1 fallback failed" in r.json()["error"]["message"], r.body
    # a client error is the client's: relayed, no fallback
    Env.up.reset()
    r = fetch(Env.port(), "POST", "/v1/chat/completions", {"model": "clienterr", "messages": []})
    assert r.status == 400 and requests_for("name=fb-t1") == [], r.body
    # the admin API refuses a cycle and an unknown fallback, and changes nothing
    h = {"Authorization": "Bearer " + token()}
    for fb, want in ((["primary"], "cycle"), (["nope"], "not configured")):
        body = {"Strategy": "Failover", "Fallbacks": fb, "Backends": [backend("t1", U("name=fb-t1"))]}
        r = fetch(Env.port(), "POST", "/admin/config/third", body, h)
        assert r.status == 400 and want in r.json()["error"]["message"], (fb, r.status, r.body)
    r = fetch(Env.port(), "GET", "/admin/config/third", None, h)
    assert "Fallbacks" not in r.json(), r.body
