"""The sample apps as real processes: demo engines -> gateway -> apps, each app with its own key."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from gwtest import (
    DEMO_ENGINE,
    GATEWAY_MAIN,
    REPO,
    Proc,
    browser_dom,
    eventually,
    free_port,
    make_user,
    needs_chromium,
    sign_in,
    signed_in_url,
    stop_all,
    wait_http,
)
from gwtest import call as raw_call

from appliance.catalog import load_catalog
from appliance.gateway import keys as K
from appliance.gateway import users as U
from appliance.gateway import wiring as W
from appliance.runtime.compose import app_env
from appliance.state.store import StateStore

CATALOG = load_catalog()
# The knowledge base's default relevance threshold (0.17) fits all-MiniLM-L6-v2; the demo engine's
# hashed bag-of-words vectors have another scale (docs/apps.md: set KB_MIN_SCORE per embedding model).
DEMO_MIN_SCORE = "0.05"
USER, PASSWORD = "tester", "a long test passphrase"
SIGNED_IN: dict[str, str] = {}  # the stack's session cookie (the apps need a signed-in user)


def call(url: str, *, headers: dict | None = None, **kw):
    """An app call as the signed-in test user (gwtest.call with the session cookie)."""
    return raw_call(url, headers={"Cookie": SIGNED_IN["cookie"], **(headers or {})}, **kw)

APPS_DIR = REPO / "images" / "apps"
VACATION = """# Vacation policy

Every employee receives 27 paid vacation days per calendar year. Unused vacation days can be
carried over until the 31st of March of the following year.

Vacation requests are approved by the team lead in the HR portal at least two weeks ahead.
"""
EXPENSES = """# Travel expenses

Train tickets in second class and economy flights are reimbursed. Hotel costs up to 150 euros per
night are covered. Submit receipts within 60 days through the expense tool.
"""


class Stack:
    """Two demo engines (chat + embedding), the gateway and the three apps, as processes."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[Proc] = []
        self.store = StateStore(root / "state.db")
        self.gw_dir = root / "gateway"
        self.gw_dir.mkdir(parents=True)

    def start(self, argv, env, name) -> Proc:
        p = Proc(argv, env, self.root / f"{name}.log")
        self.procs.append(p)
        return p

    def up(self) -> "Stack":
        engines = {}
        for model, role in (("demo-chat", "chat"), ("demo-embed", "embedding")):
            port = free_port()
            self.start([sys.executable, str(DEMO_ENGINE)],
                       {"PORT": str(port), "SERVED_MODEL_NAME": model, "MODEL_ROLE": role}, model)
            engines[model] = f"http://127.0.0.1:{port}"
        (self.gw_dir / "routes.json").write_text(json.dumps({"models": engines}))
        K.export_keys_file(store=self.store, directory=self.gw_dir)
        port = free_port()
        self.gateway_url = f"http://127.0.0.1:{port}"  # apps get it with /v1, as the runtime passes it
        self.gateway = self.start([sys.executable, str(GATEWAY_MAIN)],
                                  {"PORT": str(port), "GATEWAY_CONFIG_DIR": str(self.gw_dir)}, "gateway")
        self.apps, self.keys = {}, {}
        for app, d in CATALOG.apps.items():
            roles = {r.role for r in d.roles}
            bound = {"chat": "demo-chat", **({"embedding": "demo-embed"} if "embedding" in roles else {})}
            ak = W.ensure_app_key(app, sorted(bound.values()), store=self.store,
                                  secrets_dir=self.root / app / "secrets", export_dir=self.gw_dir)
            self.keys[app] = ak
            env = app_env(d, bound, gateway_url=self.gateway_url + "/v1", public_gateway_url=self.gateway_url + "/v1")
            port = free_port()
            env.update(PORT=str(port), APP_API_KEY_FILE=ak.key_file, APP_DATA_DIR=str(self.root / app / "data"),
                       KB_MIN_SCORE=DEMO_MIN_SCORE)
            self.start([sys.executable, str(APPS_DIR / app / "main.py")], env, app)
            self.apps[app] = f"http://127.0.0.1:{port}"
        for url in [*engines.values(), self.gateway_url]:
            wait_http(url + ("/healthz" if url == self.gateway_url else "/health"))
        for url in self.apps.values():
            wait_http(url + "/healthz")
        make_user(USER, PASSWORD, store=self.store, export_dir=self.gw_dir)
        self.cookie = SIGNED_IN["cookie"] = sign_in(self.gateway_url, USER, PASSWORD)
        return self

    def link(self, user: str = USER) -> str:
        """A fresh one-time sign-in link at this stack's gateway."""
        return U.create_login_link(user, base_url=self.gateway_url, store=self.store, export_dir=self.gw_dir).url

    def down(self) -> None:
        stop_all(self.procs[::-1])
        self.store.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("apps-stack")).up()
    yield s
    s.down()


def gateway_lines(stack) -> list[dict]:
    return [json.loads(line) for line in stack.gateway.output().splitlines() if line.startswith("{")]


def test_every_app_image_carries_the_one_shared_appkit():
    from appliance.runtime.images import build_sources

    shared = APPS_DIR / "common" / "appkit.py"
    assert sorted(APPS_DIR.glob("*/appkit.py")) == [shared]  # one copy in the source tree
    assert len(CATALOG.apps) == 3
    for app in CATALOG.apps:
        files = {arc: path for path, arc in build_sources(f"apps/{app}")}
        assert "main.py" in files and files["appkit.py"] == shared, app


def test_customer_service_grounds_in_faq_and_uses_its_key(stack):
    status, _, body = call(stack.apps["customer-service"] + "/api/chat",
                           body={"messages": [{"role": "user", "content": "Can I return a product I bought?"}]})
    assert status == 200, body
    assert body["model"] == "demo-chat" and "Can I return a product" in body["answer"]
    assert body["grounding"][0]["q"] == "Can I return a product?"
    status, _, page = call(stack.apps["customer-service"] + "/")
    assert status == 200 and b"Customer-service chat" in page
    lines = gateway_lines(stack)
    assert any(r.get("key") == "app-customer-service" and r.get("path") == "/v1/chat/completions"
               and r.get("status") == 200 for r in lines)


def test_knowledge_base_retrieves_and_cites_the_right_document(stack):
    kb = stack.apps["knowledge-base"]
    for name, text in (("vacation-policy.md", VACATION), ("travel-expenses.md", EXPENSES)):
        status, _, body = call(kb + "/api/documents", body={"name": name, "text": text})
        assert status == 201 and body["chunks"] >= 1 and body["embed_model"] == "demo-embed", body
    status, _, body = call(kb + "/api/ask", body={"question": "How many paid vacation days does an employee get?"})
    assert status == 200, body
    top = body["citations"][0]
    assert top["document"] == "vacation-policy.md" and "27 paid vacation days" in top["text"]
    assert body["embed_model"] == "demo-embed" and body["model"] == "demo-chat"
    assert "27 paid vacation days" in body["answer"]  # the demo engine quotes the prompt it was given
    status, _, body = call(kb + "/api/ask", body={"question": "Are hotel costs per night reimbursed?"})
    assert body["citations"][0]["document"] == "travel-expenses.md"
    # both calls went through the gateway with the app's key: embeddings and chat
    lines = [r for r in gateway_lines(stack) if r.get("key") == "app-knowledge-base" and r.get("status") == 200]
    assert {r["path"] for r in lines} >= {"/v1/embeddings", "/v1/chat/completions"}
    # the vectors live in SQLite in the app's data directory
    assert (stack.root / "knowledge-base" / "data" / "kb.sqlite").stat().st_size > 0


def multipart(files: list[tuple[str, bytes]], fields: dict | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body (what a browser's FormData sends) and its Content-Type."""
    boundary = "----appliance-test-7d1f"
    out = b""
    for name, value in (fields or {}).items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    for filename, data in files:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
                "Content-Type: text/markdown\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_raw(url: str, data: bytes, ctype: str, headers: dict | None = None):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": ctype, "Cookie": SIGNED_IN["cookie"], **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_knowledge_base_replace_delete_and_file_upload(stack):
    kb = stack.apps["knowledge-base"]
    body, ctype = multipart([("notes.txt", "The parking garage opens at 6am.".encode())])
    status, doc = post_raw(kb + "/api/documents", body, ctype)
    assert status == 201 and doc["name"] == "notes.txt" and doc["chunks"] == 1, doc
    again = call(kb + "/api/documents", body={"name": "notes.txt", "text": "The parking garage opens at 7am."})[2]
    docs = call(kb + "/api/documents")[2]["documents"]
    assert [d["name"] for d in docs].count("notes.txt") == 1 and again["id"] != doc["id"]
    body = call(kb + "/api/ask", body={"question": "When does the parking garage open?"})[2]
    assert body["citations"][0]["document"] == "notes.txt" and "7am" in body["citations"][0]["text"]
    status, _, _ = call(kb + f"/api/documents/{again['id']}", method="DELETE")
    assert status == 200
    assert "notes.txt" not in [d["name"] for d in call(kb + "/api/documents")[2]["documents"]]
    assert call(kb + "/api/ask", body={})[0] == 400
    # a multipart upload: one file, UTF-8, the optional name field renames it
    body, ctype = multipart([("a.md", b"x"), ("b.md", b"y")])
    assert post_raw(kb + "/api/documents", body, ctype)[0] == 400
    body, ctype = multipart([("latin1.txt", "caf\xe9".encode("latin-1"))])
    assert post_raw(kb + "/api/documents", body, ctype)[0] == 415
    body, ctype = multipart([("upload.bin", b"Desks are booked in the room planner.")], {"name": "desks.md"})
    status, doc = post_raw(kb + "/api/documents", body, ctype)
    assert status == 201 and doc["name"] == "desks.md"
    assert call(kb + f"/api/documents/{doc['id']}", method="DELETE")[0] == 200


def test_code_assistant_profiles_and_ask(stack):
    ca = stack.apps["code-assistant"]
    status, _, info = call(ca + "/api/info")
    assert status == 200 and info["models"] == ["demo-chat"] and info["gateway"] == stack.gateway_url + "/v1"
    assert info["evaluation_models"] == []  # the demo engine's models are not the built-in evaluation ones
    status, hdrs, yaml_text = call(ca + "/profile/continue.yaml")
    import yaml

    doc = yaml.safe_load(yaml_text)
    model = doc["models"][0]
    assert model["provider"] == "openai" and model["apiBase"] == stack.gateway_url + "/v1"
    assert model["model"] == "demo-chat" and "autocomplete" in model["roles"]
    assert "apk_" not in yaml_text.decode()  # a profile never carries a key
    status, _, cj = call(ca + "/profile/continue.json")
    assert cj["models"][0]["apiBase"] == stack.gateway_url + "/v1"
    assert b"OPENAI_BASE_URL=" + stack.gateway_url.encode() + b"/v1" in call(ca + "/profile/openai.env")[2]
    status, _, body = call(ca + "/api/ask", body={"prompt": "reverse a list", "code": "xs = [1, 2]",
                                                  "language": "python"})
    assert status == 200 and "reverse a list" in body["answer"]
    # the profile works as given (with a real key in place of the placeholder)
    dev = K.create_key("dev", models=["demo-chat"], store=stack.store, export_dir=stack.gw_dir).key
    assert eventually(lambda: raw_call(model["apiBase"] + "/models", key=dev)[0] == 200)[0]


def test_app_key_rotation_and_revocation_reach_the_app(stack):
    cs = stack.apps["customer-service"]
    ask = {"question": "What are your opening hours?"}
    K.revoke_key("app-customer-service", store=stack.store, export_dir=stack.gw_dir)
    assert eventually(lambda: call(cs + "/api/chat", body=ask)[0] == 401)[0]
    status, _, body = call(cs + "/api/chat", body=ask)
    assert status == 401 and "gateway" in body["error"]
    ak = W.ensure_app_key("customer-service", ["demo-chat"], store=stack.store,
                          secrets_dir=Path(stack.keys["customer-service"].secrets_dir), export_dir=stack.gw_dir)
    assert ak.created
    assert eventually(lambda: call(cs + "/api/chat", body=ask)[0] == 200)[0]  # no app restart


def test_app_units_chunking():
    spec = importlib.util.spec_from_file_location("kb_main", APPS_DIR / "knowledge-base" / "main.py")
    kb = importlib.util.module_from_spec(spec)
    old = os.environ.get("APP_DATA_DIR")
    spec.loader.exec_module(kb)
    if old is not None:
        os.environ["APP_DATA_DIR"] = old
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 60 + "end." for i in range(10))
    chunks = kb.chunk(text, 800)
    assert all(len(c) <= 1100 for c in chunks) and len(chunks) >= 4
    assert all(f"Paragraph {i}." in "".join(chunks) for i in range(10))
    long = "A" * 3000
    assert [len(c) for c in kb.chunk(long, 800)] == [800, 800, 800, 600]
    assert "alert" not in kb.to_text("x.html", "<p>Hello</p><script>alert(1)</script><p>World</p>")
    v = kb.normalise([3.0, 4.0])
    assert abs(v[0] - 0.6) < 1e-6 and abs(v[1] - 0.8) < 1e-6


@needs_chromium
def test_pages_in_a_real_browser_reach_the_gateway(stack, tmp_path):
    from urllib.parse import quote

    before = len(gateway_lines(stack))
    dom = browser_dom(signed_in_url(stack.link(), stack.apps["customer-service"] + "/?q=" +
                                    quote("How do I reset my password?")), tmp_path / "b1")
    assert 'data-status="answered"' in dom and "How do I reset my password" in dom
    assert "Based on FAQ: How do I reset my password?" in dom
    assert 'id="evaluation-notice"' not in dom  # APP_EVALUATION_MODELS is not set here (test_apps_ui.py: set)

    call(stack.apps["knowledge-base"] + "/api/documents", body={"name": "vacation-policy.md", "text": VACATION})
    dom = browser_dom(signed_in_url(stack.link(), stack.apps["knowledge-base"] + "/?q=" +
                                    quote("How many vacation days do I get?")), tmp_path / "b2")
    assert 'data-status="answered"' in dom
    assert 'class="cite" data-document="vacation-policy.md"' in dom and "27 paid vacation days" in dom

    dom = browser_dom(signed_in_url(stack.link(), stack.apps["code-assistant"] + "/?q=" +
                                    quote("write hello world in Go")), tmp_path / "b3")
    assert 'data-loaded="1">demo-chat<' in dom and "apiBase" in dom
    assert 'data-status="answered"' in dom and "write hello world in Go" in dom

    keys = {r.get("key") for r in gateway_lines(stack)[before:] if r.get("status") == 200}
    assert {"app-customer-service", "app-knowledge-base", "app-code-assistant"} <= keys


def test_knowledge_base_reranks_through_the_gateway_when_configured(stack):
    from gwtest import UPSTREAM

    port = free_port()
    stack.start([sys.executable, str(UPSTREAM), str(port), "test-rerank"], {}, "rerank-engine")
    wait_http(f"http://127.0.0.1:{port}/health")
    routes = json.loads((stack.gw_dir / "routes.json").read_text())
    routes["models"]["test-rerank"] = f"http://127.0.0.1:{port}"
    (stack.gw_dir / "routes.json").write_text(json.dumps(routes))
    key = K.create_key("kb-rerank", store=stack.store, export_dir=stack.gw_dir).key
    apps = {}
    for label, rerank in (("good", "test-rerank"), ("broken", "no-such-reranker")):
        app_port = free_port()
        env = app_env(CATALOG.apps["knowledge-base"], {"chat": "demo-chat", "embedding": "demo-embed",
                                                        "rerank": rerank},
                      gateway_url=stack.gateway_url, public_gateway_url=stack.gateway_url)
        assert env["RERANK_MODEL"] == rerank
        env.update(PORT=str(app_port), APP_API_KEY=key, APP_DATA_DIR=str(stack.root / f"kb-{label}"),
                   KB_MIN_SCORE=DEMO_MIN_SCORE)
        stack.start([sys.executable, str(APPS_DIR / "knowledge-base" / "main.py")], env, f"kb-{label}")
        apps[label] = f"http://127.0.0.1:{app_port}"
        wait_http(apps[label] + "/healthz")
        for name, text in (("vacation-policy.md", VACATION), ("travel-expenses.md", EXPENSES)):
            assert call(apps[label] + "/api/documents", body={"name": name, "text": text})[0] == 201
    question = {"question": "How many paid vacation days per calendar year?"}
    assert eventually(lambda: call(apps["good"] + "/api/ask", body=question)[2].get("reranked") is True)[0]
    body = call(apps["good"] + "/api/ask", body=question)[2]
    assert body["citations"][0]["document"] == "vacation-policy.md"
    assert any(r.get("key") == "kb-rerank" and r.get("path") == "/v1/rerank" and r.get("status") == 200
               for r in gateway_lines(stack))
    body = call(apps["broken"] + "/api/ask", body=question)[2]  # the reranker is missing: cosine order kept
    assert body["reranked"] is False and body["citations"][0]["document"] == "vacation-policy.md"


# ---- one login for the box: sessions, origins, content types (issue 14 item 3) -------------------
APP_WRITES = {"customer-service": ("/api/chat", {"question": "What are your opening hours?"}),
              "knowledge-base": ("/api/documents", {"name": "planted.md", "text": "Planted by another site."}),
              "code-assistant": ("/api/ask", {"prompt": "reverse a list"})}


def kb_documents(stack) -> list[str]:
    return [d["name"] for d in call(stack.apps["knowledge-base"] + "/api/documents")[2]["documents"]]


def test_without_a_session_the_apps_refuse_and_send_people_to_sign_in(stack):
    from urllib.parse import parse_qs, urlsplit

    from gwtest import fetch

    gw = urlsplit(stack.gateway_url)
    for app, url in stack.apps.items():
        assert raw_call(url + "/healthz")[0] == 200  # the runtime's health check needs no session
        for path in ("/api/info", "/profile/continue.yaml"):
            status, _, body = raw_call(url + path)
            assert status == 401 and body["error"] == "sign in required" and body["reason"] == "sign_in_required"
            login = urlsplit(body["login_url"])
            assert (login.hostname, login.port, login.path) == ("127.0.0.1", gw.port, "/auth/login")
            assert parse_qs(login.query)["next"] == [url + "/"]
        path, payload = APP_WRITES[app]
        assert raw_call(url + path, body=payload)[0] == 401
        assert raw_call(url + path, body=payload, headers={"Cookie": "appliance_session=v1.forged.x"})[0] == 401
        status, hdrs, _ = fetch(url + "/?q=hello")  # a page: 303 to the sign-in page, back here after it
        login = urlsplit(hdrs["Location"])
        assert status == 303 and (login.netloc, login.path) == (gw.netloc, "/auth/login")
        assert parse_qs(login.query)["next"] == [url + "/?q=hello"]
        # the host name the browser used is kept (the session cookie belongs to that name)
        status, hdrs, _ = fetch(url + "/", headers={"Host": f"localhost:{urlsplit(url).port}"})
        assert hdrs["Location"].startswith(f"http://localhost:{gw.port}/auth/login?next=http%3A%2F%2Flocalhost")
        assert fetch(url + "/appkit.js")[0] == 303  # every file of the app needs the session
    assert "planted.md" not in kb_documents(stack)


def test_cross_origin_and_wrong_content_types_are_refused_and_change_nothing(stack):
    before = kb_documents(stack)
    chats = len([r for r in gateway_lines(stack) if r.get("path") == "/v1/chat/completions"])
    for app, url in stack.apps.items():
        path, payload = APP_WRITES[app]
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                        {"Origin": stack.gateway_url},  # another port of the box is another origin too
                        {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
            status, _, body = call(url + path, body=payload, headers=headers)
            assert status == 403 and "cross-site" in body["error"], (app, headers, body)
        # a form or text/plain post (what a cross-site page can send without CORS): refused
        for ctype, data in (("text/plain", json.dumps(payload).encode()),
                            ("application/x-www-form-urlencoded", b"question=hi&name=x&text=y&prompt=z")):
            status, body = post_raw(url + path, data, ctype)
            assert status == 415 and "application/json" in body["error"], (app, ctype, body)
        if app == "knowledge-base":
            body, ctype = multipart([("planted.md", b"x")])
            assert post_raw(url + path, body, ctype, {"Origin": "http://evil.example"})[0] == 403
        else:  # multipart is taken only where an upload is expected
            body, ctype = multipart([("x.md", b"x")])
            assert post_raw(url + path, body, ctype)[0] == 415
    kb = stack.apps["knowledge-base"]
    assert call(kb + "/api/documents/1", method="DELETE", headers={"Origin": "http://evil.example"})[0] == 403
    assert kb_documents(stack) == before  # nothing planted, nothing deleted
    assert len([r for r in gateway_lines(stack) if r.get("path") == "/v1/chat/completions"]) == chats  # no quota spent
    # the page's own origin, or a client without Origin and Sec-Fetch-Site (curl, SDKs), is served
    cs = stack.apps["customer-service"]
    assert call(cs + "/api/chat", body=APP_WRITES["customer-service"][1], headers={"Origin": cs,
                                                                                    "Sec-Fetch-Site": "same-origin"}
                )[0] == 200
    assert call(cs + "/api/chat", body=APP_WRITES["customer-service"][1])[0] == 200


def test_apps_call_for_the_signed_in_user_and_usage_per_user_is_recorded(stack):
    make_user("carol", PASSWORD, store=stack.store, export_dir=stack.gw_dir)
    carol = sign_in(stack.gateway_url, "carol", PASSWORD)
    cs = stack.apps["customer-service"]
    for _ in range(2):
        status, _, _ = raw_call(cs + "/api/chat", body={"question": "Can I return a product?"},
                                headers={"Cookie": carol})
        assert status == 200
    lines = [r for r in gateway_lines(stack) if r.get("key") == "app-customer-service" and r.get("user") == "carol"]
    assert len(lines) >= 2 and {r["path"] for r in lines} >= {"/v1/chat/completions"}
    app_log = (stack.root / "customer-service.log").read_text()
    assert '"user":"carol"' in app_log and carol.split("=", 1)[1] not in app_log  # the name, never the session

    def usage():
        u = {x.name: x.usage for x in U.list_users(store=stack.store, usage_dir=stack.gw_dir).users}
        return u["carol"] if u["carol"].requests >= 2 and u["carol"].completion_tokens > 0 else None

    carol_usage, _ = eventually(usage, timeout_s=10)  # the gateway flushes usage.json every ~2 s
    assert carol_usage and carol_usage.prompt_tokens > 0 and carol_usage.last_used_at
    # an ordinary key cannot claim a user
    dev = K.create_key("claims-a-user", store=stack.store, export_dir=stack.gw_dir).key
    eventually(lambda: raw_call(stack.gateway_url + "/v1/models", key=dev)[0] == 200)
    raw_call(stack.gateway_url + "/v1/models", key=dev, headers={"X-Appliance-User": "mallory"})
    assert not any(r.get("user") == "mallory" for r in gateway_lines(stack))


def test_signing_out_or_a_new_password_reaches_the_apps_within_seconds(stack):
    from gwtest import fetch

    make_user("dave", PASSWORD, store=stack.store, export_dir=stack.gw_dir)
    kb = stack.apps["knowledge-base"] + "/api/info"
    dave = sign_in(stack.gateway_url, "dave", PASSWORD)
    before = sum(1 for r in gateway_lines(stack) if r.get("path") == "/auth/session")
    for _ in range(3):
        assert raw_call(kb, headers={"Cookie": dave})[0] == 200
    asked = sum(1 for r in gateway_lines(stack) if r.get("path") == "/auth/session") - before
    assert asked == 1  # the app remembers a yes for a few seconds
    assert fetch(stack.gateway_url + "/auth/logout", method="POST", data=b"{}",
                 headers={"Content-Type": "application/json", "Cookie": dave})[0] == 200
    _, waited = eventually(lambda: raw_call(kb, headers={"Cookie": dave})[0] == 401, timeout_s=10)
    assert waited <= 7
    dave = sign_in(stack.gateway_url, "dave", PASSWORD)
    assert raw_call(kb, headers={"Cookie": dave})[0] == 200
    U.set_password("dave", PASSWORD + " two", store=stack.store, export_dir=stack.gw_dir)
    assert eventually(lambda: raw_call(kb, headers={"Cookie": dave})[0] == 401, timeout_s=10)[0]


def test_the_apps_never_hand_their_key_to_the_browser(stack):
    keys = [Path(ak.key_file).read_text().strip() for ak in stack.keys.values()]
    for app, url in stack.apps.items():
        texts = [call(url + p)[2] for p in ("/", "/appkit.js", "/api/info")]
        texts += [call(url + "/profile/" + n)[2] for n in ("continue.yaml", "continue.json", "openai.env")
                  if app == "code-assistant"]
        blob = "".join(t.decode() if isinstance(t, bytes) else json.dumps(t) for t in texts)
        assert "apk_" not in blob and not any(k in blob for k in keys), app


def test_when_the_session_check_cannot_be_made_the_app_refuses(stack):
    """Fail closed: the gateway's session endpoint unreachable -> 503 auth_unavailable, not open."""
    d = CATALOG.apps["customer-service"]
    env = app_env(d, {"chat": "demo-chat"}, gateway_url=stack.gateway_url + "/v1",
                  public_gateway_url=stack.gateway_url + "/v1")
    port = free_port()
    env.update(PORT=str(port), APP_API_KEY_FILE=stack.keys["customer-service"].key_file,
               GATEWAY_AUTH_URL=f"http://127.0.0.1:{free_port()}")
    stack.start([sys.executable, str(APPS_DIR / "customer-service" / "main.py")], env, "cs-noauth")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz")
    status, _, body = call(url + "/api/chat", body={"question": "Hello?"})
    assert status == 503 and body["reason"] == "auth_unavailable" and "sign-in" in body["error"]
    assert raw_call(url + "/api/info")[0] == 401  # no cookie at all: no need to ask, sign in
