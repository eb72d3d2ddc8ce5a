"""Client keys through the official OpenAI Node SDK (tests/e2e/sdk_openai.mjs,
npm `openai` pinned in tests/e2e/package.json), against the contract (DESIGN.md
part 2, "Client keys" and "Usage and cost"): what an SDK user sees, as the
SDK's own error classes, streams and retry logic see it."""

import json
import os
import re
import subprocess
import time

from harness import ROOT, backend, fetch
from test_admin import token
from test_keys import kadmin, keyed, make, usage_rows
from test_proxy import Env, U, log_mark, requests_for, test, wait_for

E2E = os.path.join(ROOT, "tests", "e2e")
SCRIPT = os.path.join(E2E, "sdk_openai.mjs")


def sdk(cases, *flags, key=None, **opts):
    """Runs the SDK script's cases against the server; every TAP check must pass."""
    assert os.path.isdir(os.path.join(E2E, "node_modules", "openai")), \
        "npm openai missing: scripts/deps.sh test installs it"
    argv = ["node", SCRIPT, "--base", "http://127.0.0.1:%d/v1" % Env.port()]
    if key is not None:
        argv += ["--key", key]
    for k, v in opts.items():
        argv += ["--" + k, str(v)]
    argv += list(flags)
    p = subprocess.run(argv + list(cases), cwd=E2E, capture_output=True, text=True,
                       errors="replace", timeout=60)
    out = p.stdout
    bad = [l for l in out.splitlines() if l.startswith("not ok ")]
    good = [l for l in out.splitlines() if l.startswith("ok ")]
    assert not bad and p.returncode == 0, (out + p.stderr)[-4000:]
    for c in cases:
        assert any(l.split(" - ", 1)[1].startswith(c + ": ") for l in good), (c, out[-2000:])
    return out


def one_route(spec, **extra):
    b = backend("a", U(spec))
    b.update(extra)
    return {"Strategy": "Failover", "Backends": [b]}


def key_usage(name):
    k = [x for x in kadmin("GET").json()["Keys"] if x["Name"] == name]
    return k[0]["Usage"] if k else None


def never_saw_client_key(spec, key):
    got = requests_for(spec)
    for e in got:
        assert e["headers"].get("authorization") == "Bearer key-a", e["headers"]
        assert key not in json.dumps(e), "the client key reached the backend"
    return got


@test
def sdk_key_errors_and_models():
    Env.routing({"m": one_route("name=sdk-m+ptok=10+ctok=20"),
                 "other": one_route("name=sdk-other")})
    with keyed():
        k = make(Name="sdk-limited", Models=["m"])["Key"]
        Env.up.reset()
        sdk(["chat", "wrong_key", "model_not_allowed", "models_list"], key=k,
            model="m", other="other", expect="hello from sdk-m", models="m")
        # only the valid request reached a backend
        assert len(never_saw_client_key("name=sdk-m+", k)) == 1, requests_for("name=sdk-m+")
        assert requests_for("name=sdk-other") == [], requests_for("name=sdk-other")


@test
def sdk_stream_without_stream_options():
    Env.routing({"m": one_route("name=sdk-st+ptok=11+ctok=7+chunks=4")})
    with keyed():
        k = make(Name="sdk-stream")["Key"]
        Env.up.reset()
        sdk(["stream_plain"], key=k, chunks=4)
        sent = never_saw_client_key("name=sdk-st+", k)
        assert len(sent) == 1, sent
        assert json.loads(sent[0]["body"]).get("stream_options") == {"include_usage": True}, sent[0]["body"]
        # accounted all the same, from the chunk the client never saw
        want = {"Requests": 1, "PromptTokens": 11, "CompletionTokens": 7, "CostUsd": 0}
        assert wait_for(lambda: key_usage("sdk-stream") == want, 3), key_usage("sdk-stream")

        def row():
            return [x for x in usage_rows(group_by="key,model") if x.get("Key") == "sdk-stream"]
        assert wait_for(lambda: row() and row()[0]["Requests"] == 1, 3), usage_rows(group_by="key,model")
        r = row()[0]
        assert r["PromptTokens"] == 11 and r["CompletionTokens"] == 7 and r["Model"] == "m", r


@test
def sdk_stream_with_include_usage():
    Env.routing({"m": one_route("name=sdk-su+ptok=13+ctok=5+chunks=3")})
    with keyed():
        k = make(Name="sdk-stream-usage")["Key"]
        Env.up.reset()
        sdk(["stream_usage"], key=k, chunks=3, ptok=13, ctok=5)
        sent = never_saw_client_key("name=sdk-su+", k)
        assert len(sent) == 1, sent
        want = {"Requests": 1, "PromptTokens": 13, "CompletionTokens": 5, "CostUsd": 0}
        assert wait_for(lambda: key_usage("sdk-stream-usage") == want, 3), key_usage("sdk-stream-usage")


@test
def sdk_rate_limit_429_with_retry_after():
    Env.routing({"m": one_route("name=sdk-rpm")})
    with keyed():
        k = make(Name="sdk-rpm", Rpm=2)["Key"]
        Env.up.reset()
        sdk(["rate_limit"], key=k)
        assert len(never_saw_client_key("name=sdk-rpm", k)) == 2, requests_for("name=sdk-rpm")


@test
def sdk_budget_spent_429_not_retried():
    Env.routing({"m": one_route("name=sdk-bud+ptok=10+ctok=20")})
    with keyed():
        k = make(Name="sdk-budget", BudgetTokens=10)["Key"]
        Env.up.reset()
        mark = log_mark(Env.server)
        t0 = time.time()
        sdk(["budget"], key=k)  # one request spends it, the next is refused and not retried
        took = time.time() - t0
        assert len(never_saw_client_key("name=sdk-bud", k)) == 1, requests_for("name=sdk-bud")

        # what llmproxy saw: two requests, not the 2 retries the SDK makes of a plain 429
        def seen():
            return re.findall(r"req=\S+ /chat/completions model=m .* status=(\d+)", Env.server.log()[mark:])
        assert wait_for(lambda: len(seen()) >= 2, 2) and seen() == ["200", "429"], seen()

        def logged():
            r = fetch(Env.port(), "GET", "/admin/requests?limit=20", None, {"Authorization": "Bearer " + token()})
            return [x["Status"] for x in r.json()["Requests"] if x["Key"] == "sdk-budget"]
        assert wait_for(lambda: len(logged()) >= 2, 3) and logged() == [429, 200], logged()
        assert took < 5, took  # the SDK's backoff would add 0.5 s, then 1 s (and a node start)


@test
def sdk_keyless_any_api_key():
    Env.routing({"m": one_route("name=sdk-kl"), "other": one_route("name=sdk-kl-other")})
    assert kadmin("GET").json()["Keys"] == [], "keyless mode: no key may exist"
    Env.up.reset()
    anything = "sk-whatever-the-sdk-was-given-123"
    sdk(["chat", "stream_plain", "models_list"], "--keyless", key=anything, expect="hello from sdk-kl",
        models="m,other")
    assert len(never_saw_client_key("name=sdk-kl", anything)) == 2, requests_for("name=sdk-kl")


def sdk_more(cases, key=None):
    """Runs tests/e2e/sdk_more.mjs (npm openai and @anthropic-ai/sdk); every check must pass."""
    assert os.path.isdir(os.path.join(E2E, "node_modules", "@anthropic-ai", "sdk")), \
        "npm @anthropic-ai/sdk missing: scripts/deps.sh test installs it"
    argv = ["node", os.path.join(E2E, "sdk_more.mjs"), "--port", str(Env.port())]
    if key is not None:
        argv += ["--key", key]
    p = subprocess.run(argv + list(cases), cwd=E2E, capture_output=True, text=True,
                       errors="replace", timeout=90)
    bad = [l for l in p.stdout.splitlines() if l.startswith("not ok ")]
    assert not bad and p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    for c in cases:
        assert ("- %s: " % c) in p.stdout, (c, p.stdout[-2000:])


def more_routing():
    ant = {"Api": "anthropic"}
    return {"gpt": one_route("name=sdk-resp"),
            "gpt-cut": one_route("name=sdk-rcut+chunks=5+drop=2"),
            "whisper": one_route("name=sdk-mp"),
            "claude": one_route("name=sdk-ant", **ant),
            "claude-cut": one_route("name=sdk-acut+chunks=5+drop=2", **ant),
            "claude-429": one_route("name=sdk-a429+status=429+ra=7", **ant)}


@test
def sdk_responses_audio_images_and_anthropic():
    Env.routing(more_routing())
    Env.up.reset()
    sdk_more(["responses", "responses_stream", "audio_images", "anthropic_messages"])
    # the multipart bodies went on byte for byte: the file part's hash as sent
    mp = [e for e in requests_for("name=sdk-mp") if "form" in e]
    assert len(mp) == 3 and all(e["form"]["model"] == "whisper" for e in mp), mp
    with keyed():
        k = make(Name="sdk-more")["Key"]
        sdk_more(["responses", "anthropic_messages"], key=k)
        u = key_usage("sdk-more")
        assert u["Requests"] >= 8 and u["PromptTokens"] > 0, u


@test
def claude_code_through_llmproxy():
    """Claude Code itself (npm @anthropic-ai/claude-code, pinned), as a user runs it:
    ANTHROPIC_BASE_URL at llmproxy, a client key as its token, one print-mode turn."""
    cli = os.path.join(E2E, "node_modules", "@anthropic-ai", "claude-code", "cli.js")
    assert os.path.exists(cli), "npm @anthropic-ai/claude-code missing: scripts/deps.sh test installs it"
    ant = {"Api": "anthropic"}
    Env.routing({"claude": {"Strategy": "Failover", "Backends": [
        dict(backend("down", U("name=cc-down+status=529"), keys=["sk-ant-1"]), **ant),
        dict(backend("up", U("name=cc-up+ptok=12+ctok=34"), keys=["sk-ant-2"]), **ant)]}})
    home = os.path.join(Env.server.state, "cc-home")
    os.makedirs(home, exist_ok=True)
    with keyed():
        k = make(Name="claude-code")["Key"]
        Env.up.reset()
        env = dict(os.environ, ANTHROPIC_BASE_URL="http://127.0.0.1:%d" % Env.port(),
                   ANTHROPIC_AUTH_TOKEN=k, ANTHROPIC_MODEL="claude", ANTHROPIC_SMALL_FAST_MODEL="claude",
                   DISABLE_TELEMETRY="1", DISABLE_ERROR_REPORTING="1", DISABLE_AUTOUPDATER="1",
                   CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", HOME=home)
        env.pop("ANTHROPIC_API_KEY", None)
        p = subprocess.run(["node", cli, "-p", "say hi", "--output-format", "json"], env=env, cwd=home,
                           capture_output=True, text=True, errors="replace", timeout=90)
        assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out["is_error"] is False and out["result"].startswith("tok0"), out
        got = requests_for("name=cc-up")
        assert got and all(e["headers"]["x-api-key"] == "sk-ant-2" and "authorization" not in e["headers"]
                           for e in got), [e["headers"] for e in got]
        assert k not in json.dumps(Env.up.requests()), "the client key reached a backend"
        assert len(requests_for("name=cc-down")) >= 1  # failed over invisibly
        assert key_usage("claude-code")["PromptTokens"] >= 12, key_usage("claude-code")
