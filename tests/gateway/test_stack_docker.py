"""The gateway, keys and apps in the REAL demo stack on the Docker engine (issue 7's Must-show).

One demo stack per module (``appliance init --demo --yes --models demo-chat,demo-embed``: the templated test
engine from its catalog overlay, tests/stack_support.py; a unique instance, data dir
and ports), driven only through the CLI and HTTP as a user would; purged afterwards.
The apps need a signed-in user (docs/users.md): their API calls carry a session cookie from a
one-time sign-in link (``stack_session``), a browser opens each page through a fresh link.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from gwtest import (
    browser_dom,
    call,
    eventually,
    fetch,
    needs_chromium,
    signed_in_url,
    stack_login_link,
    stack_session,
)

from tests.stack_support import DemoStack
from tests.support import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DOC = """# Office handbook

The office kitchen is cleaned every Thursday evening by the facilities team.

Visitors must be registered at the front desk and wear a visitor badge at all times.
Badges are returned to the reception desk before leaving the building.
"""


class GatewayStack(DemoStack):
    def __init__(self, root: Path):
        super().__init__(root, "gw")
        self.created_keys: list[str] = []

    def create_key(self, *args: str) -> str:
        res = self.cli("keys", "create", *args, "--json")
        assert res.returncode == 0, res.stderr
        key = json.loads(res.stdout)["key"]
        self.created_keys.append(key)
        return key

    def endpoints(self) -> dict:
        code = ("import json; from appliance.runtime.stack import current_release; "
                "print(json.dumps(current_release().stack.endpoints()))")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, **self.env}, timeout=60)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def logs(self, service: str) -> str:
        res = self.cli("logs", service, "--tail", "all")
        assert res.returncode == 0, res.stderr
        return res.stdout + res.stderr

    def app_keys(self) -> list[str]:
        return [p.read_text().strip() for p in (self.data_dir / "apps").glob("*/secrets/api_key")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    stack = GatewayStack(tmp_path_factory.mktemp("gw-demo"))
    try:
        res = stack.init_demo("--quiet")
        assert res.returncode == 0, f"init failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        yield stack
    finally:
        stack.purge(down_first=True)


def test_models_needs_a_key_and_revocation_is_seen_within_seconds(demo):
    url = demo.gateway + "/v1/models"
    status, _, body = call(url)
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    assert call(url, key="apk_0123456789ab_" + "Z" * 43)[0] == 401
    key = demo.create_key("--name", "must-show")
    status, _, body = call(url, key=key)
    assert status == 200 and {"demo-chat", "demo-embed"} <= {m["id"] for m in body["data"]}
    status, _, body = call(demo.gateway + "/v1/chat/completions", key=key,
                           body={"model": "demo-chat", "messages": [{"role": "user", "content": "hello gateway"}]})
    assert status == 200 and "hello gateway" in body["choices"][0]["message"]["content"]
    status, hdrs, raw = call(demo.gateway + "/v1/chat/completions", key=key,
                             body={"model": "demo-chat", "stream": True,
                                   "messages": [{"role": "user", "content": "stream please"}]})
    assert status == 200 and "event-stream" in hdrs["Content-Type"] and b"[DONE]" in raw
    assert call(demo.gateway + "/v1/embeddings", key=key, body={"model": "demo-embed", "input": "x"})[0] == 200

    res = demo.cli("keys", "revoke", "must-show")
    assert res.returncode == 0, res.stderr
    t0 = time.monotonic()
    rejected, _ = eventually(lambda: call(url, key=key)[0] == 401, timeout_s=15)
    waited = time.monotonic() - t0
    assert rejected and waited < 5, f"revoked key accepted for {waited:.1f}s"
    # usage was counted per key and is visible to the admin (once the gateway flushed it, every 2 s)
    def usage_of_must_show():
        keys = json.loads(demo.cli("keys", "list", "--all", "--json").stdout)["keys"]
        usage = next(k for k in keys if k["name"] == "must-show")["usage"]
        return usage if usage["requests"] >= 3 else None

    usage = wait_until(usage_of_must_show, what="the gateway's usage flush (3 requests of 'must-show')",
                       timeout_s=20, interval_s=0.5)
    assert usage["requests"] == 3 and usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


def test_scope_expiry_and_quotas(demo):
    chat = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
    scoped = demo.create_key("--name", "only-embed", "--models", "demo-embed")
    status, _, body = call(demo.gateway + "/v1/chat/completions", key=scoped, body=chat)
    assert status == 403 and body["error"]["code"] == "model_not_allowed"
    assert call(demo.gateway + "/v1/embeddings", key=scoped, body={"model": "demo-embed", "input": "x"})[0] == 200
    assert [m["id"] for m in call(demo.gateway + "/v1/models", key=scoped)[2]["data"]] == ["demo-embed"]

    expiring = demo.create_key("--name", "expiring", "--expires", "3s")
    assert call(demo.gateway + "/v1/models", key=expiring)[0] == 200
    status, _, body = wait_until(lambda: (lambda r: r if r[0] != 200 else None)(
        call(demo.gateway + "/v1/models", key=expiring)), what="the gateway to refuse a key 3 s after its creation",
        timeout_s=15, interval_s=0.2)
    assert status == 401 and body["error"]["code"] == "expired_api_key"

    limited = demo.create_key("--name", "rpm-2", "--rpm", "2")
    codes = [call(demo.gateway + "/v1/chat/completions", key=limited, body=chat)[0] for _ in range(3)]
    assert codes == [200, 200, 429]
    budget = demo.create_key("--name", "tokens-20", "--tokens", "20")
    codes = [call(demo.gateway + "/v1/chat/completions", key=budget, body=chat)[0] for _ in range(4)]
    assert codes[0] == 200 and codes[-1] == 429


def test_knowledge_base_answers_from_an_uploaded_document_with_citation(demo):
    kb = demo.endpoints()["apps"]["knowledge-base"].rstrip("/")
    signed_in = {"Cookie": stack_session(demo)}
    status, _, body = call(kb + "/api/documents", body={"name": "office-handbook.md", "text": DOC},
                           headers=signed_in)
    assert status == 201 and body["embed_model"] == "demo-embed", body
    status, _, body = call(kb + "/api/documents", headers=signed_in,
                           body={"name": "unrelated.md",
                                 "text": "Quarterly revenue grew by four percent in the northern region."})
    assert status == 201, body
    status, _, body = call(kb + "/api/ask", body={"question": "When is the office kitchen cleaned?"},
                           headers=signed_in)
    assert status == 200, body
    top = body["citations"][0]
    assert top["document"] == "office-handbook.md" and "kitchen is cleaned every Thursday" in top["text"]
    assert "Thursday" in body["answer"] and body["model"] == "demo-chat"
    gw_log = demo.logs("gateway")
    lines = [json.loads(x) for x in gw_log.splitlines() if x.startswith("{")]
    # through the app's own key, for the signed-in user (the gateway counts usage per user)
    used = {(r.get("key"), r.get("path"), r.get("user")) for r in lines if r.get("status") == 200}
    assert {("app-knowledge-base", "/v1/embeddings", "admin"),
            ("app-knowledge-base", "/v1/chat/completions", "admin")} <= used


@needs_chromium
def test_each_app_page_in_a_real_browser_reaches_the_gateway(demo, tmp_path):
    apps = demo.endpoints()["apps"]
    assert set(apps) == {"customer-service", "knowledge-base", "code-assistant"}
    status, _, body = call(apps["knowledge-base"] + "api/documents", body={"name": "office-handbook.md", "text": DOC},
                           headers={"Cookie": stack_session(demo)})
    assert status == 201, body
    pages = {
        "customer-service": ("?q=" + quote("What are your opening hours?"), ['data-status="answered"',
                                                                          "What are your opening hours"]),
        "knowledge-base": ("?q=" + quote("Where do visitors return their badges?"),
                           ['data-status="answered"', 'data-document="office-handbook.md"', "reception desk"]),
        "code-assistant": ("?q=" + quote("sort a list in Rust"), ['data-status="answered"', "sort a list in Rust",
                                                                  'data-loaded="1">demo-chat<']),
    }
    for app, (query, expected) in pages.items():
        before = len(demo.logs("gateway").splitlines())
        # a fresh one-time link signs this browser in, then lands on the page (a link works once)
        dom = browser_dom(signed_in_url(stack_login_link(demo), apps[app] + query), tmp_path / app)
        for text in expected:
            assert text in dom, f"{app}: {text!r} not in the page"
        after = [json.loads(x) for x in demo.logs("gateway").splitlines()[before:] if x.startswith("{")]
        assert any(r.get("key") == f"app-{app}" and r.get("status") == 200 for r in after), app


def test_no_plaintext_key_in_state_or_logs_and_endpoints_reported(demo):
    probe = demo.create_key("--name", "leak-probe")
    assert call(demo.gateway + "/v1/models", key=probe)[0] == 200
    keys = demo.created_keys + demo.app_keys()
    assert len(demo.app_keys()) == 3
    state = b"".join(p.read_bytes() for p in demo.data_dir.glob("state.db*"))
    assert state
    gateway_files = b"".join(p.read_bytes() for p in (demo.data_dir / "gateway").glob("*.json"))
    logs = "".join(demo.logs(s) for s in ("gateway", "customer-service", "knowledge-base", "code-assistant",
                                          "llm-demo-chat", "embed-demo-embed"))
    for key in keys:
        secret = key.split("_", 2)[2]
        assert key.encode() not in state and secret.encode() not in state
        assert key.encode() not in gateway_files
        assert secret not in logs
    # endpoints for `appliance status --json`
    ep = demo.endpoints()
    assert ep["gateway"] == f"{demo.gateway}/v1"
    assert call(ep["gateway"].removesuffix("/v1") + "/healthz")[0] == 200
    # each reported app URL is its page: without a session it sends the browser to the gateway's
    # sign-in page (and back here after it), with one it is served
    cookie = stack_session(demo)
    gw = urlsplit(demo.gateway)
    for app, url in ep["apps"].items():
        status, hdrs, _ = fetch(url)
        assert status == 303, (app, status)
        login = urlsplit(hdrs["Location"])
        assert (login.netloc, login.path) == (gw.netloc, "/auth/login"), (app, hdrs["Location"])
        assert parse_qs(login.query)["next"] == [url], (app, hdrs["Location"])
        status, _, page = fetch(url, headers={"Cookie": cookie})
        assert status == 200 and b"<html" in page, (app, status)
    # nor is the session token in any log
    token = cookie.split("=", 1)[1]
    assert token not in "".join(demo.logs(s) for s in ("gateway", "customer-service", "knowledge-base",
                                                       "code-assistant"))
