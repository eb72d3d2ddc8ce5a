"""Peers nobody on the team wrote: a backend on Node's HTTP stack (llhttp)."""

import json
import os
import subprocess
import urllib.request

from harness import ROOT, backend, chat, fetch
from test_proxy import Env, test


class Node:
    proc = None
    port = None


def node_upstream():
    if Node.proc is None or Node.proc.poll() is not None:
        Node.proc = subprocess.Popen(["node", os.path.join(ROOT, "tests", "e2e", "strict_upstream.mjs")],
                                     stdout=subprocess.PIPE, text=True)
        Node.port = int(Node.proc.stdout.readline())
    return "http://127.0.0.1:%d/v1" % Node.port


def node_log():
    with urllib.request.urlopen("http://127.0.0.1:%d/_log" % Node.port, timeout=5) as r:
        return json.loads(r.read())


def stop_node():
    if Node.proc is not None:
        Node.proc.kill()
        Node.proc.wait()
        Node.proc = None


@test
def strict_node_backend_chat_and_stream():
    url = node_upstream()
    try:
        Env.routing({"strict": {"Strategy": "Failover", "Backends": [
            backend("node", url, keys=["sk-node-0123456789"], model="upstream-name")]}})
        sdk = {"Content-Type": "application/json", "User-Agent": "OpenAI/JS 4.70.0",
               "X-Stainless-Lang": "js", "Authorization": "Bearer sk-client"}
        r = chat(Env.port(), "strict", headers=sdk)
        assert r.status == 200 and r.json()["choices"][0]["message"]["content"] == "strict-ok", \
            (r.status, r.body[:300])
        assert r.json()["model"] == "upstream-name", r.body
        r = chat(Env.port(), "strict", stream=True, headers=sdk)
        ev = r.events()
        assert r.status == 200 and ev[-1] == "[DONE]" and len(ev) == 4, (r.status, r.body[:300])
        got = node_log()[-2:]
        for e in got:
            low = sorted(n.lower() for n in e["names"])
            assert low == sorted(["host", "accept", "authorization", "content-type",
                                  "content-length", "user-agent", "x-stainless-lang"]), e["names"]
    finally:
        stop_node()


@test
def strict_node_backend_rest_of_the_api():
    """Responses by id, Anthropic Messages and multipart through Node's llhttp and
    undici's FormData parser."""
    from test_api_more import form
    url = node_upstream()
    try:
        Env.routing({"gpt": {"Strategy": "Failover", "Backends": [backend("node", url, keys=["sk-node-1"])]},
                     "whisper": {"Strategy": "Failover", "Backends": [
                         backend("node", url, keys=["sk-node-1"], model="whisper-up")]},
                     "claude": {"Strategy": "Failover", "Backends": [
                         dict(backend("node", url, keys=["sk-node-ant"]), Api="anthropic")]}})
        data = bytes(range(256)) * 300 + b"\r\n--x\r\n"
        body, ctype = form([("model", "whisper"), ("file", ("a.wav", data)), ("language", "en")])
        r = fetch(Env.port(), "POST", "/v1/audio/transcriptions", body, {"Content-Type": ctype})
        assert r.status == 200, (r.status, r.body[:300])
        got = r.json()
        assert got["model"] == "whisper-up" and got["models"] == 1 and got["file_bytes"] == len(data) and \
            got["file_sum"] == sum(data) % 65521, got
        r = fetch(Env.port(), "POST", "/v1/messages", {"model": "claude", "max_tokens": 5, "messages": []},
                  {"anthropic-beta": "x-1"})
        assert r.status == 200 and r.json()["content"][0]["text"] == "strict-ant", (r.status, r.body[:300])
        r = fetch(Env.port(), "POST", "/v1/responses", {"model": "gpt", "input": "hi"})
        assert r.status == 200, (r.status, r.body[:300])
        rid = r.json()["id"]
        for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/input_items"), ("DELETE", "")):
            r = fetch(Env.port(), method, "/v1/responses/%s%s" % (rid, path), b"" if method == "POST" else None)
            assert r.status == 200 and r.json()["method"] == method, (method, path, r.status, r.body[:300])
        names = [sorted(n.lower() for n in e["names"]) for e in node_log()]
        assert all(len(n) == len(set(n)) for n in names), names
    finally:
        stop_node()
