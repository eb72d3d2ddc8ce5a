"""More of the API (DESIGN.md part 2, "More of the API"), second part: the
Responses API with its affinity, Anthropic Messages on "Api": "anthropic"
backends, and multipart bodies, each with failover before the first byte and
an error event after it."""

import hashlib
import json
import re

from harness import backend, fetch
from test_proxy import Env, U, log_mark, requests_for, served_by, test, wait_for
from test_keys import bearer, kadmin, keyed, make


def post(path, body, headers=None):
    return fetch(Env.port(), "POST", path, body, headers)


def typed_events(r):
    """(event, data) pairs of an SSE answer."""
    out = []
    for block in r.body.decode().replace("\r\n", "\n").split("\n\n"):
        ev, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                ev = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if data:
            out.append((ev, json.loads("\n".join(data))))
    return out


def usage_of_key(made):
    return kadmin("GET", "/" + made["Id"]).json()["Usage"]


@test
def responses_route_fail_over_and_stream():
    Env.routing({"gpt": {"Strategy": "Failover", "Backends": [
        backend("down", U("name=rs-down+status=503")),
        dict(backend("good", U("name=rs-good+ptok=7+ctok=9")), BackendModelName="up-gpt")]}})
    Env.up.reset()
    with keyed():
        made = make(Name="resp")
        r = post("/v1/responses", {"model": "gpt", "input": "hi"}, bearer(made["Key"]))
        assert r.status == 200 and served_by(r) == "rs-good", (r.status, r.body[:300])
        assert r.json()["id"].startswith("resp_rsgood_") and r.json()["model"] == "up-gpt"
        assert len(requests_for("name=rs-down")) == 1
        u = usage_of_key(made)
        assert (u["PromptTokens"], u["CompletionTokens"]) == (7, 9), u  # input_/output_tokens read
        # streamed: typed events, usage from response.completed
        r = post("/v1/responses", {"model": "gpt", "input": "hi", "stream": True}, bearer(made["Key"]))
        evs = typed_events(r)
        assert r.status == 200 and [e for e, _ in evs][:2] == ["response.created", "response.in_progress"]
        assert evs[-1][0] == "response.completed" and evs[2][1]["backend"] == "rs-good", evs
        u = usage_of_key(made)
        assert (u["PromptTokens"], u["CompletionTokens"]) == (14, 18), u
    # response.failed or error right after response.created: the next backend, invisibly
    for bad in ("failev=1", "errevent=1"):
        Env.routing({"gpt": {"Strategy": "Failover", "Backends": [
            backend("bad", U("name=rs-bad+" + bad)), backend("good", U("name=rs-good2"))]}})
        Env.up.reset()
        r = post("/v1/responses", {"model": "gpt", "input": "hi", "stream": True})
        evs = typed_events(r)
        assert r.status == 200 and all(d.get("response", d).get("backend", "rs-good2") == "rs-good2"
                                       for _, d in evs), (bad, evs)
        assert evs[0][0] == "response.created" and evs[-1][0] == "response.completed", (bad, evs)
        assert sum(1 for e, _ in evs if e == "response.created") == 1, evs
        assert len(requests_for("name=rs-bad")) == 1
    # broken after the first event: the Responses error event ends it
    Env.routing({"gpt": {"Strategy": "Failover", "Backends": [
        backend("cut", U("name=rs-cut+chunks=5+drop=2")), backend("spare", U("name=rs-spare"))]}})
    r = post("/v1/responses", {"model": "gpt", "input": "hi", "stream": True})
    evs = typed_events(r)
    assert r.status == 200 and evs[-1][0] == "error", evs
    last = evs[-1][1]
    assert last["type"] == "error" and last["code"] == "stream_interrupted" and \
        last["param"] is None and last["message"], last
    assert [e for e, _ in evs].count("response.output_text.delta") == 2, evs
    assert requests_for("name=rs-spare") == []


@test
def responses_affinity():
    keys = ["sk-a1", "sk-a2", "sk-a3"]
    Env.routing({"gpt": {"Strategy": "RoundRobin", "Backends": [
        backend("one", U("name=af-one"), keys=keys), backend("two", U("name=af-two"), keys=keys)]},
        "other": {"Strategy": "Failover", "Backends": [backend("x", U("name=af-other"))]}})
    Env.up.reset()
    made = []
    for i in range(6):  # spread over both backends and their keys
        r = post("/v1/responses", {"model": "gpt", "input": "hi %d" % i, "stream": i % 2 == 1})
        assert r.status == 200, r.body[:300]
        rid = r.json()["id"] if i % 2 == 0 else typed_events(r)[0][1]["response"]["id"]
        made.append((rid, r.headers["x-llmproxy-request-id"][0]))
    by = {}
    for e in Env.up.requests():
        if e["path"].endswith("/responses"):
            by[e["spec"].split("=")[1]] = by.get(e["spec"].split("=")[1], 0) + 1
    assert by.get("af-one") and by.get("af-two"), by
    for rid, _ in made:
        # every follow-up finds its backend and key (the fake answers 404 anywhere else)
        r = fetch(Env.port(), "GET", "/v1/responses/" + rid)
        assert r.status == 200 and r.json()["id"] == rid, (rid, r.status, r.body[:300])
        r = fetch(Env.port(), "GET", "/v1/responses/%s/input_items?limit=5&order=asc" % rid)
        assert r.status == 200 and r.json()["query"] == "?limit=5&order=asc", r.body[:300]
        r = post("/v1/responses", {"model": "gpt", "input": "more", "previous_response_id": rid})
        assert r.status == 200 and r.json()["previous_response_id"] == rid, (rid, r.body[:300])
        r = fetch(Env.port(), "POST", "/v1/responses/%s/cancel" % rid, b"")
        assert r.status == 200 and r.json()["status"] == "cancelled", r.body[:300]
    # HEAD: the backend's headers, never judged an empty answer
    rid = made[1][0]
    for _ in range(4):
        r = fetch(Env.port(), "HEAD", "/v1/responses/" + rid)
        assert r.status == 200 and r.body == b"", (r.status, r.body[:200])
    assert fetch(Env.port(), "GET", "/v1/responses/" + rid).status == 200  # no circuit opened
    # a bodiless POST goes without a Content-Type
    cancel = [e for e in Env.up.requests() if e["path"].endswith("/cancel")][-1]
    assert "content-type" not in cancel["headers"] and cancel["headers"]["content-length"] == "0", cancel
    # the follow-up's method reaches the backend as it came
    rid = made[0][0]
    r = fetch(Env.port(), "DELETE", "/v1/responses/" + rid)
    assert r.status == 200 and r.json()["deleted"] is True, r.body[:300]
    assert [e["method"] for e in Env.up.requests() if rid in e["path"]][-1] == "DELETE"
    # unknown ids: 404 in the OpenAI shape, no backend asked
    Env.up.reset()
    for path in ("/v1/responses/resp_nope", "/v1/responses/resp_nope/input_items"):
        r = fetch(Env.port(), "GET", path)
        assert r.status == 404 and r.json()["error"]["code"] == "response_not_found", r.body
    r = post("/v1/responses", {"model": "gpt", "input": "x", "previous_response_id": "resp_nope"})
    assert r.status == 404 and r.json()["error"]["param"] == "previous_response_id", r.body
    r = post("/v1/responses", {"model": "gpt", "input": "x", "previous_response_id": 7})
    assert r.status == 400 and r.json()["error"]["param"] == "previous_response_id", r.body
    assert Env.up.requests() == []
    assert fetch(Env.port(), "PUT", "/v1/responses/" + rid).status == 405
    assert fetch(Env.port(), "GET", "/v1/responses/a/b").status == 404
    # a response is its maker's: another client key hears it does not exist
    with keyed():
        a, b = make(Name="aff-a"), make(Name="aff-b")
        r = post("/v1/responses", {"model": "gpt", "input": "mine"}, bearer(a["Key"]))
        rid = r.json()["id"]
        assert fetch(Env.port(), "GET", "/v1/responses/" + rid, None, bearer(a["Key"])).status == 200
        r = fetch(Env.port(), "GET", "/v1/responses/" + rid, None, bearer(b["Key"]))
        assert r.status == 404, r.body
        lim = make(Name="aff-lim", Models=["other"])
        r = fetch(Env.port(), "GET", "/v1/responses/" + rid, None, bearer(lim["Key"]))
        assert r.status == 404, r.body
        # previous_response_id never leads a key into a model it may not use:
        # the backend that made it now serves only "other"
        c = make(Name="aff-c", Models=["gpt"])
        rid = post("/v1/responses", {"model": "gpt", "input": "x"}, bearer(c["Key"])).json()["id"]
        Env.routing({"gpt": {"Strategy": "Failover", "Backends": [backend("z", U("name=af-z"))]},
                     "other": {"Strategy": "Failover", "Backends": [
                         backend("one", U("name=af-one"), keys=keys),
                         backend("two", U("name=af-two"), keys=keys)]}})
        r = post("/v1/responses", {"model": "gpt", "input": "x", "previous_response_id": rid},
                 bearer(c["Key"]))
        assert r.status == 404 and r.json()["error"]["code"] == "previous_response_not_found", r.body
        # a background response's tokens are not known when it is made: refused to limited keys
        lim2 = make(Name="aff-budget", BudgetTokens=1000)
        r = post("/v1/responses", {"model": "other", "input": "x", "background": True},
                 bearer(lim2["Key"]))
        assert r.status == 400 and r.json()["error"]["param"] == "background", r.body
        r = post("/v1/responses", {"model": "other", "input": "x", "background": True},
                 bearer(a["Key"]))
        assert r.status == 200, r.body[:300]


def anthropic_routing():
    return {"claude": {"Strategy": "Failover", "Backends": [
        dict(backend("an-down", U("name=an-down+status=529"), keys=["sk-ant-down"]), Api="anthropic"),
        dict(backend("an-good", U("name=an-good+ptok=11+ctok=13+cached=4"), keys=["sk-ant-good"]),
             Api="anthropic", BackendModelName="claude-up"),
        backend("oa", U("name=an-openai"))]}}


@test
def anthropic_messages():
    Env.routing(anthropic_routing())
    Env.up.reset()
    body = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    with keyed():
        made = make(Name="ant")
        h = {"x-api-key": made["Key"], "anthropic-version": "2023-06-01",
             "anthropic-beta": "prompt-caching-2024-07-31"}
        r = post("/v1/messages", body, h)
        assert r.status == 200 and served_by(r) == "an-good" and r.json()["type"] == "message", r.body[:300]
        got = requests_for("name=an-good")[-1]
        hd = got["headers"]
        assert hd["x-api-key"] == "sk-ant-good" and "authorization" not in hd, hd
        assert hd["anthropic-version"] == "2023-06-01" and hd["anthropic-beta"] == "prompt-caching-2024-07-31"
        assert json.loads(got["body"])["model"] == "claude-up"
        assert len(requests_for("name=an-down")) == 1 and requests_for("name=an-openai") == []
        u = usage_of_key(made)
        assert (u["PromptTokens"], u["CompletionTokens"]) == (15, 13), u  # cache reads are input
        # streamed, usage from message_start and message_delta
        r = post("/v1/messages", dict(body, stream=True), h)
        evs = typed_events(r)
        assert r.status == 200 and evs[0][0] == "message_start" and evs[-1][0] == "message_stop", evs
        u = usage_of_key(made)
        assert (u["PromptTokens"], u["CompletionTokens"]) == (30, 26), u
        # count_tokens: Anthropic only, not priced
        r = post("/v1/messages/count_tokens", body, h)
        assert r.status == 200 and r.json()["input_tokens"] == 42, r.body
        assert usage_of_key(made)["CompletionTokens"] == 26
        # llmproxy's own errors in the Anthropic shape
        r = post("/v1/messages", body, {"x-api-key": "sk-llmp-wrong"})
        assert r.status == 401 and r.json()["type"] == "error" and \
            r.json()["error"]["type"] == "authentication_error", r.body
    Env.up.reset()
    # the default version when the client names none; no beta then
    r = post("/v1/messages", body)
    hd = requests_for("name=an-good")[-1]["headers"]
    assert r.status == 200 and hd["anthropic-version"] == "2023-06-01" and "anthropic-beta" not in hd, hd
    r = post("/v1/messages", {"max_tokens": 5, "messages": []})
    assert r.status == 400 and r.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "you must provide a model parameter"}}, r.body
    r = post("/v1/messages", dict(body, model="nope"))
    assert r.status == 404 and r.json()["error"]["type"] == "not_found_error", r.body
    r = post("/v1/messages/batches", body)
    assert r.status == 404 and r.json()["error"]["type"] == "not_found_error", r.body
    # the other endpoints reach only the openai backends
    r = post("/v1/chat/completions", {"model": "claude", "messages": []})
    assert r.status == 200 and served_by(r) == "an-openai", r.body[:300]
    Env.routing({"claude": {"Strategy": "Failover", "Backends": [backend("oa", U("name=an-openai"))]},
                 "onlyant": {"Strategy": "Failover", "Backends": [
                     dict(backend("a", U("name=an-only")), Api="anthropic")]}})
    r = post("/v1/messages", body)
    assert r.status == 503 and r.json()["error"]["type"] == "overloaded_error" and \
        '"Api": "anthropic"' in r.json()["error"]["message"], r.body
    r = post("/v1/chat/completions", {"model": "onlyant", "messages": []})
    assert r.status == 503 and r.json()["error"]["code"] == "no_backend_enabled", r.body


@test
def anthropic_stream_failover_and_error_event():
    Env.routing({"claude": {"Strategy": "Failover", "Backends": [
        dict(backend("e", U("name=an-err+errevent=1")), Api="anthropic"),
        dict(backend("g", U("name=an-g")), Api="anthropic")]}})
    Env.up.reset()
    body = {"model": "claude", "max_tokens": 64, "stream": True, "messages": []}
    r = post("/v1/messages", body)
    evs = typed_events(r)
    assert r.status == 200 and evs[0][0] == "message_start" and \
        all(e != "error" for e, _ in evs), evs
    assert len(requests_for("name=an-err")) == 1
    Env.routing({"claude": {"Strategy": "Failover", "Backends": [
        dict(backend("c", U("name=an-cut+chunks=5+drop=2")), Api="anthropic"),
        dict(backend("g", U("name=an-g")), Api="anthropic")]}})
    mark = log_mark(Env.server)  # the first request's line matches too
    r = post("/v1/messages", body)
    evs = typed_events(r)
    assert r.status == 200 and evs[-1] == ("error", {"type": "error", "error": {
        "type": "api_error", "message": evs[-1][1]["error"]["message"]}}), evs
    assert [e for e, _ in evs].count("content_block_delta") == 2, evs
    assert wait_for(lambda: "/messages model=claude" in Env.server.log()[mark:], 3)
    line = [x for x in Env.server.log()[mark:].splitlines() if "/messages model=claude" in x][-1]
    assert "usage=estimated" in line, line  # a cut stream's output is unknown: estimated, never 1
    # every backend failing: the verdict in the Anthropic shape, with Retry-After for 429s
    Env.routing({"claude": {"Strategy": "Failover", "Backends": [
        dict(backend("r", U("name=an-429+status=429+ra=7")), Api="anthropic")]}})
    r = post("/v1/messages", dict(body, stream=False))
    assert r.status == 429 and r.json()["error"]["type"] == "rate_limit_error", r.body
    assert r.headers["retry-after"] == ["7"], r.headers


def form(fields, boundary="----llmproxyTest7MA4YWxk"):
    out = b""
    for name, value in fields:
        out += b"--" + boundary.encode() + b"\r\n"
        if isinstance(value, tuple):
            fn, data = value
            out += b'Content-Disposition: form-data; name="%s"; filename="%s"\r\n' % (
                name.encode(), fn.encode())
            out += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
        else:
            out += b'Content-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (
                name.encode(), value.encode())
    return out + b"--" + boundary.encode() + b"--\r\n", "multipart/form-data; boundary=" + boundary


AUDIO = bytes(range(256)) * 64 + b"\r\n--not-the-boundary\r\n" + b"\x00\r\r\n\n" * 100


@test
def multipart_routed_by_model_part():
    for i, path in enumerate(("/v1/audio/transcriptions", "/v1/audio/translations",
                              "/v1/images/edits", "/v1/images/variations")):
        Env.routing({"whisper": {"Strategy": "Failover", "Backends": [
            backend("down", U("name=mp-down%d+status=502" % i)),
            backend("good", U("name=mp-good"), model="whisper-up")]}})
        Env.up.reset()
        body, ctype = form([("file", ("a.mp3", AUDIO)), ("model", "whisper"),
                            ("response_format", "json"), ("prompt", "ünïcode \" quoted")])
        r = post(path, body, {"Content-Type": ctype})
        assert r.status == 200 and served_by(r) == "mp-good", (path, r.status, r.body[:300])
        ans = r.json()
        assert ans["model"] == "whisper-up", ans  # the model part is mapped
        assert ans["parts"]["file"]["sha256"] == hashlib.sha256(AUDIO).hexdigest(), ans
        got = requests_for("name=mp-good")[-1]
        assert got["form"]["prompt"] == "ünïcode \" quoted" and got["form"]["response_format"] == "json"
        assert got["headers"]["content-type"] == ctype, got["headers"]
        assert len(requests_for("name=mp-down%d" % i)) == 1, path
    # a 25 MB file passes (OpenAI's audio limit)
    big = bytes(range(256)) * (25 * 1024 * 4)
    body, ctype = form([("model", "whisper"), ("file", ("big.wav", big))])
    r = post("/v1/audio/transcriptions", body, {"Content-Type": ctype})
    assert r.status == 200 and r.json()["parts"]["file"]["bytes"] == len(big), r.body[:300]
    # a streamed transcription is relayed as events
    body, ctype = form([("file", ("a.mp3", b"abc")), ("model", "whisper"), ("stream", "true")])
    r = post("/v1/audio/transcriptions", body, {"Content-Type": ctype})
    assert r.status == 200 and typed_events(r)[-1][0] == "transcript.text.done", r.body[:300]


@test
def multipart_hostile_bodies_get_clear_400s():
    Env.routing({"whisper": {"Strategy": "Failover", "Backends": [backend("g", U("name=mp-h"))]}})
    Env.up.reset()
    path = "/v1/audio/transcriptions"
    good, ctype = form([("model", "whisper"), ("file", ("a.mp3", b"x" * 1000))])
    cases = [
        ("no boundary", good, "multipart/form-data", "boundary"),
        ("not multipart", good, "application/json", "multipart"),
        ("truncated part", good[:len(good) // 2], ctype, "ended before"),
        ("truncated before the close", good[:-4], ctype, "ended before"),
        ("10,000 parts", form([("model", "whisper")] + [("f%d" % i, "v") for i in range(10000)])[0],
         ctype, "1000"),
        ("model twice", form([("model", "whisper"), ("model", "whisper")])[0], ctype, "model"),
        ("no model", form([("file", ("a", b"x"))])[0], ctype, "you must provide a model parameter"),
        ("bare LF", good.replace(b"\r\n", b"\n"), ctype, ""),
        ("name* beside name", good.replace(b'name="model"', b'name="x"; name*=UTF-8\'\'model'), ctype, ""),
        ("an escaped name", good.replace(b'name="model"', b'name="mod\\el"'), ctype, ""),
        ("Content-Transfer-Encoding", good.replace(b'name="model"\r\n', b'name="model"\r\nContent-Transfer-Encoding: base64\r\n'), ctype, ""),
    ]
    for what, body, ct, words in cases:
        r = post(path, body, {"Content-Type": ct})
        assert r.status == 400 and r.json()["error"]["type"] == "invalid_request_error", (what, r.status, r.body[:300])
        assert words.lower() in r.json()["error"]["message"].lower(), (what, r.json())
    assert Env.up.requests() == [], Env.up.requests()[:2]
    r = post(path, form([("model", "nope")])[0], {"Content-Type": ctype})
    assert r.status == 404 and r.json()["error"]["code"] == "model_not_found", r.body
