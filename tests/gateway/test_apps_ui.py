"""The sample apps' pages on a real model's terms, in a real headless Chromium (selenium).

A real model is slow, sometimes not there (loading, stopped) and, on the built-in small
evaluation model, weak. So the pages show a "thinking" state and disable sending while a
request is in flight, say in plain words when the model is unavailable (the backends map
gateway/engine failures to ``503 {"reason": "model_unavailable"}``: appkit.py), state that the
box runs a small evaluation model (``APP_EVALUATION_MODELS`` -> ``/api/info``), and the code
assistant renders Markdown answers without ever parsing the model's text as HTML.

The engine here is scripted, in this process (:class:`ScriptedEngine`): the test holds an answer
for as long as it looks at the page (no fixed sleeps: the page's state is checked while the
engine provably has the request), makes it answer like llama.cpp while loading (503), stops it
(the gateway answers 502) or scripts the answer's text. The gateway and the apps are the real
processes, each app with its own key.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gwtest import (
    GATEWAY_MAIN,
    REPO,
    Proc,
    console_errors,
    eventually,
    free_port,
    make_user,
    needs_webdriver,
    sign_in,
    stop_all,
    wait_http,
    webdriver_chromium,
)
from gwtest import call as raw_call
from upstream import embed

from appliance.catalog import load_catalog
from appliance.gateway import keys as K
from appliance.gateway import wiring as W
from appliance.runtime.compose import app_env
from appliance.state.store import StateStore

APPS_DIR = REPO / "images" / "apps"
SPEC = importlib.util.spec_from_file_location("appkit_under_test", APPS_DIR / "common" / "appkit.py")
appkit = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(appkit)
MODEL_UNAVAILABLE = appkit.MODEL_UNAVAILABLE
CHAT, EMBED = "test-chat", "test-embed"
EVAL_CHAT, EVAL_EMBED = "smollm2-135m-instruct", "all-minilm-l6-v2"
PARKING = "The parking garage opens at 6am and closes at 11pm. Visitors park on level 2."
USER, PASSWORD = "ui-tester", "a long ui test passphrase"
SIGNED_IN: dict[str, str] = {}


def call(url: str, *, headers: dict | None = None, **kw):
    """An app call as the signed-in test user (the apps need one)."""
    return raw_call(url, headers={"Cookie": SIGNED_IN["cookie"], **(headers or {})}, **kw)


class ScriptedEngine:
    """An OpenAI-style engine in this process that the test steers: ``held()`` keeps chat answers
    back until the block ends (``waiting`` counts the requests it holds), ``fail_status`` makes it
    refuse every POST like llama.cpp while it loads, ``answer`` scripts the chat text, ``stop()``
    and ``start()`` take it off and back onto its port. HTTP/1.0: no keep-alive connection
    outlives a stop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.answer: str | None = None
        self.fail_status: int | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = 0
        self.chats = 0
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def _send(self, status: int, obj: dict) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": CHAT}, {"id": EMBED}]})
                self._send(200, {"status": "ok"})

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if engine.fail_status:
                    return self._send(engine.fail_status, {"error": {"code": engine.fail_status,
                                                                     "message": "Loading model",
                                                                     "type": "unavailable_error"}})
                if self.path == "/v1/embeddings":
                    inputs = req["input"] if isinstance(req["input"], list) else [req["input"]]
                    return self._send(200, {"object": "list", "model": req["model"], "data": [
                        {"object": "embedding", "index": i, "embedding": embed(t)} for i, t in enumerate(inputs)]})
                question = next((m["content"] for m in reversed(req["messages"]) if m["role"] == "user"), "")
                with engine._lock:
                    engine.waiting += 1
                engine.gate.wait(120)
                with engine._lock:
                    engine.waiting -= 1
                    engine.chats += 1
                text = engine.answer if engine.answer is not None else f"Scripted answer to: {question[:80]}"
                self._send(200, {"id": "x", "object": "chat.completion", "model": req["model"],
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                              "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self) -> None:
        self.gate.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @contextlib.contextmanager
    def held(self):
        self.gate.clear()
        try:
            yield self
        finally:
            self.gate.set()

    @contextlib.contextmanager
    def down(self, how: str):
        """The engine ``stopped`` (nothing listens: the gateway answers 502) or ``loading`` (503)."""
        if how == "stopped":
            self.stop()
        else:
            self.fail_status = 503
        try:
            yield self
        finally:
            self.fail_status = None
            if self.server is None:
                self.start()


class UiStack:
    """The scripted engine, the real gateway and the three apps (told that their models are the
    built-in evaluation models), plus a customer-service app whose gateway is not there at all."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[Proc] = []
        self.store = StateStore(root / "state.db")
        self.gw_dir = root / "gateway"
        self.gw_dir.mkdir(parents=True)
        self.engine = ScriptedEngine()

    def start(self, argv, env, name) -> Proc:
        p = Proc(argv, env, self.root / f"{name}.log")
        self.procs.append(p)
        return p

    def up(self) -> UiStack:
        catalog = load_catalog()
        (self.gw_dir / "routes.json").write_text(json.dumps({"models": {CHAT: self.engine.url,
                                                                        EMBED: self.engine.url}}))
        K.export_keys_file(store=self.store, directory=self.gw_dir)
        gw_port = free_port()
        self.gateway_url = f"http://127.0.0.1:{gw_port}"
        self.start([sys.executable, str(GATEWAY_MAIN)], {"PORT": str(gw_port), "GATEWAY_CONFIG_DIR": str(self.gw_dir)},
                   "gateway")
        self.apps = {}
        plan = {"customer-service": (self.gateway_url, EVAL_CHAT),
                "knowledge-base": (self.gateway_url, f"{EVAL_EMBED},{EVAL_CHAT}"),
                "code-assistant": (self.gateway_url, EVAL_CHAT),
                # its gateway is down (nothing listens there) and it is told of no evaluation model
                "customer-service-nogw": (f"http://127.0.0.1:{free_port()}", "")}
        for name, (gateway, evaluation) in plan.items():
            app = name.removesuffix("-nogw")
            d = catalog.apps[app]
            bound = {"chat": CHAT, **({"embedding": EMBED} if "embedding" in {r.role for r in d.roles} else {})}
            env = app_env(d, bound, gateway_url=gateway + "/v1", public_gateway_url=gateway + "/v1")
            if gateway == self.gateway_url:
                env["APP_API_KEY_FILE"] = W.ensure_app_key(app, sorted(bound.values()), store=self.store,
                                                           secrets_dir=self.root / name / "secrets",
                                                           export_dir=self.gw_dir).key_file
            else:  # a second key for the same app would replace the first one
                env["APP_API_KEY"] = "apk_no-gateway-to-check-it"
                env["GATEWAY_AUTH_URL"] = self.gateway_url  # sessions are still checked by the real one
            port = free_port()
            env.update(PORT=str(port), APP_DATA_DIR=str(self.root / name / "data"),
                       APP_EVALUATION_MODELS=evaluation, KB_MIN_SCORE="0.05")  # hashed test vectors: another scale
            self.start([sys.executable, str(APPS_DIR / app / "main.py")], env, name)
            self.apps[name] = f"http://127.0.0.1:{port}"
        wait_http(self.gateway_url + "/healthz")
        for url in self.apps.values():
            wait_http(url + "/healthz")
        make_user(USER, PASSWORD, store=self.store, export_dir=self.gw_dir)
        SIGNED_IN["cookie"] = sign_in(self.gateway_url, USER, PASSWORD)
        assert call(self.apps["knowledge-base"] + "/api/documents",
                    body={"name": "parking.md", "text": PARKING})[0] == 201
        return self

    def down(self) -> None:
        stop_all(self.procs[::-1])
        self.engine.stop()
        self.store.close()


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    s = UiStack(tmp_path_factory.mktemp("apps-ui")).up()
    yield s
    s.down()


def sign_in_in_the_browser(driver, ui, app_url: str, password: str = PASSWORD) -> None:
    """Open an app page, get sent to the gateway's sign-in page, sign in with the form."""
    driver.get(app_url)
    wait_js(driver, "return location.pathname === '/auth/login' && !!document.querySelector('#password')",
            what="the gateway's sign-in page")
    driver.find_element("css selector", "#name").send_keys(USER)
    driver.find_element("css selector", "#password").send_keys(password)
    driver.find_element("css selector", "#submit").click()


@pytest.fixture(scope="module")
def browser(ui):
    driver = webdriver_chromium()
    driver.set_page_load_timeout(60)
    sign_in_in_the_browser(driver, ui, ui.apps["customer-service"] + "/")  # one login for every app
    try:
        wait_js(driver, "return document.body && document.body.dataset.ready === '1'", what="the app after sign-in")
    except AssertionError:
        raise AssertionError(f"{driver.current_url}\n{driver.page_source[:1500]}\n{driver.get_cookies()}") from None
    yield driver
    driver.quit()


# What each page asks with and where it shows what: the question box, the send button, the
# "thinking" placeholder while a request is in flight, where the answer (or the error) appears.
PAGES = {
    "customer-service": {"input": "#question", "send": "#send", "thinking": "#thinking",
                         "answer": ".msg.assistant[id^='answer-']", "error": ".msg.error",
                         "question": "Can I return a product?"},
    "knowledge-base": {"input": "#question", "send": "#send", "thinking": "#answer.thinking",
                       "answer": "#answer", "error": "#answer.error",
                       "question": "When does the parking garage open?"},
    "code-assistant": {"input": "#prompt", "send": "#ask", "thinking": "#answer.thinking",
                       "answer": "#answer", "error": "#answer.error", "question": "reverse a list in python"},
}
STATE_JS = """
const [input, send, thinking] = arguments;
const q = s => document.querySelector(s);
const t = q(thinking);
return {status: document.body.dataset.status || "", busy: document.body.dataset.busy || "",
        thinking: t ? t.textContent : null, thinking_visible: !!(t && t.offsetParent !== null),
        send_disabled: q(send).disabled, input_disabled: q(input).disabled};
"""


def wait_js(driver, script: str, *args, timeout_s: float = 30.0, what: str = ""):
    """Poll a script's value in the page until it is truthy (bounded); returns the value."""
    value, _ = eventually(lambda: driver.execute_script(script, *args), timeout_s, 0.05)
    assert value, f"waited {timeout_s}s for {what or script!r}"
    return value


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_js(driver, "return document.body.dataset.ready === '1'", what="the page to load its info")
    console_errors(driver)  # start the test's console log here


def ask(driver, page: dict, text: str) -> None:
    box = driver.find_element("css selector", page["input"])
    box.clear()
    box.send_keys(text)
    driver.find_element("css selector", page["send"]).click()


def state(driver, page: dict) -> dict:
    return driver.execute_script(STATE_JS, page["input"], page["send"], page["thinking"])


# ---- the backend part (no browser) ----------------------------------------------------------

def test_appkit_maps_gateway_and_engine_failures_to_model_unavailable(monkeypatch):
    import time

    class Gw(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path == "/slow":
                time.sleep(2)  # on purpose: longer than the client's timeout below
            code = int(self.path.strip("/")) if self.path.strip("/").isdigit() else 200
            body = json.dumps({"error": {"message": f"refused with {code}"}}).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client that timed out has gone

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gw)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("APP_API_KEY", "k")
        monkeypatch.setenv("GATEWAY_URL", f"http://127.0.0.1:{server.server_port}/v1")
        gw = appkit.Gateway()

        def failure(path, timeout_s=5.0):
            with pytest.raises(appkit.GatewayError) as info:
                gw.request(path, timeout_s=timeout_s)
            return info.value

        for code in (502, 503, 504):
            err = failure(f"/{code}")
            assert (err.status, err.reason, err.message) == (503, "model_unavailable", MODEL_UNAVAILABLE)
            assert err.detail == f"gateway {code}: refused with {code}"
        err = failure("/slow", timeout_s=0.3)
        assert err.reason == "model_unavailable" and "Timeout" in err.detail
        err = failure("/401")  # not the model: the app's key -- said as it is
        assert (err.status, err.reason, err.message) == (401, "", "gateway: refused with 401")
        monkeypatch.setenv("GATEWAY_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
        gw = appkit.Gateway()
        err = failure("/v1/models")
        assert err.reason == "model_unavailable" and err.detail.startswith("gateway unreachable")
    finally:
        server.shutdown()
        server.server_close()
    monkeypatch.setenv("APP_EVALUATION_MODELS", f" {EVAL_EMBED}, {EVAL_CHAT} ,")
    monkeypatch.setenv("APP_TITLE", "Our KB")
    assert appkit.app_info("knowledge-base", "Knowledge base", documents=2) == {
        "app": "knowledge-base", "title": "Our KB", "documents": 2, "evaluation_models": [EVAL_EMBED, EVAL_CHAT]}
    monkeypatch.delenv("APP_EVALUATION_MODELS")
    assert appkit.app_info("x", "X")["evaluation_models"] == []


def test_apps_report_evaluation_models_and_answer_model_unavailable(ui):
    expected = {"customer-service": [EVAL_CHAT], "knowledge-base": [EVAL_EMBED, EVAL_CHAT],
                "code-assistant": [EVAL_CHAT], "customer-service-nogw": []}
    for name, models in expected.items():
        status, _, info = call(ui.apps[name] + "/api/info")
        assert status == 200 and info["evaluation_models"] == models, (name, info)
    asks = {"customer-service": ("/api/chat", {"question": "Can I return a product?"}),
            "knowledge-base": ("/api/ask", {"question": "When does the parking garage open?"}),
            "code-assistant": ("/api/ask", {"prompt": "reverse a list"})}
    for how in ("stopped", "loading"):
        with ui.engine.down(how):
            for name, (path, body) in asks.items():
                status, _, out = call(ui.apps[name] + path, body=body)
                assert status == 503, (how, name, out)
                assert out["error"] == MODEL_UNAVAILABLE and out["reason"] == "model_unavailable", (how, name, out)
                assert ("502" if how == "stopped" else "503") in out["detail"]
            # an upload needs the embedding model too: the same answer, nothing stored
            status, _, out = call(ui.apps["knowledge-base"] + "/api/documents", body={"name": "x.md", "text": "x y"})
            assert status == 503 and out["reason"] == "model_unavailable"
    status, _, out = call(ui.apps["customer-service-nogw"] + "/api/chat", body={"question": "Hello?"})
    assert status == 503 and out["reason"] == "model_unavailable" and "unreachable" in out["detail"]
    # back up: the same apps answer again, no restart
    for name, (path, body) in asks.items():
        assert call(ui.apps[name] + path, body=body)[0] == 200, name
    # the app's log says why, for an administrator (the page gets the plain words)
    log_text = (ui.root / "customer-service-nogw.log").read_text()
    assert '"event":"model_unavailable"' in log_text and "gateway unreachable" in log_text


def test_pages_never_parse_text_as_html():
    """Every page puts text in with textContent (the Markdown renderer builds nodes): no API that
    parses a string as HTML appears in any page or shared script."""
    sources = [*APPS_DIR.glob("*/static/*.html"), *APPS_DIR.glob("*/static/*.js"), APPS_DIR / "common" / "appkit.js"]
    assert len(sources) >= 5
    for path in sources:
        text = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in text, f"{path.relative_to(REPO)} uses {sink}"


# ---- in the browser ---------------------------------------------------------------------------

@needs_webdriver
@pytest.mark.parametrize("app", list(PAGES))
def test_page_shows_thinking_and_disables_send_while_the_model_answers(ui, browser, app):
    page = PAGES[app]
    open_page(browser, ui.apps[app] + "/")
    before = state(browser, page)
    assert not before["send_disabled"] and not before["input_disabled"] and before["thinking"] is None
    chats = ui.engine.chats
    with ui.engine.held():
        ask(browser, page, page["question"])
        # the engine has the request and is holding it: the page waits for the model
        assert eventually(lambda: ui.engine.waiting == 1, 30)[0], "the request never reached the engine"
        now = wait_js(browser, "return document.body.dataset.status === 'asking' && document.body.dataset.busy",
                      what="the asking state")
        now = state(browser, page)
        assert now["send_disabled"] and now["input_disabled"] and now["busy"] == "1", now
        assert now["thinking_visible"] and "thinking" in now["thinking"].lower(), now
        browser.find_element("css selector", page["send"]).click()  # disabled: no second request
    wait_js(browser, "return document.body.dataset.status === 'answered'", what="the answer")
    after = state(browser, page)
    assert not after["send_disabled"] and not after["input_disabled"] and not after["busy"], after
    assert after["thinking"] is None or "thinking" not in after["thinking"].lower(), after
    assert ui.engine.chats == chats + 1  # one question, one answer
    answer = browser.find_element("css selector", page["answer"]).text
    assert "Scripted answer to:" in answer
    assert console_errors(browser) == []


@needs_webdriver
@pytest.mark.parametrize("app,how", [("customer-service", "stopped"), ("knowledge-base", "stopped"),
                                     ("code-assistant", "stopped"), ("knowledge-base", "loading"),
                                     ("customer-service-nogw", "gateway down")])
def test_page_says_in_plain_words_when_the_model_is_unavailable(ui, browser, app, how):
    page = PAGES[app.removesuffix("-nogw")]
    open_page(browser, ui.apps[app] + "/")
    with ui.engine.down(how) if how != "gateway down" else contextlib.nullcontext():
        ask(browser, page, page["question"])
        wait_js(browser, "return document.body.dataset.status === 'error'", what="the error")
    shown = browser.find_element("css selector", page["error"])
    assert shown.text == MODEL_UNAVAILABLE
    assert shown.get_attribute("data-reason") == "model_unavailable"
    text = browser.find_element("tag name", "body").text
    assert "Bad Gateway" not in text and "went wrong" not in text and "gateway:" not in text
    after = state(browser, page)
    assert not after["send_disabled"] and not after["input_disabled"], after
    # the failed response itself is in the console (Chromium logs a 503); no script error is
    assert console_errors(browser, network_ok=True) == []
    if how != "gateway down":  # asked again once the model is back: answered on the same page
        ask(browser, page, page["question"])
        wait_js(browser, "return document.body.dataset.status === 'answered'", what="the answer after recovery")
        assert "Scripted answer to:" in browser.find_element("css selector", page["answer"]).text


@needs_webdriver
def test_pages_state_that_the_box_runs_a_small_evaluation_model(ui, browser):
    one = (f"This box runs a small evaluation model ({EVAL_CHAT}): answers can be simple or wrong. "
           "Your administrator can serve a bigger model.")
    both = (f"This box runs small evaluation models ({EVAL_EMBED}, {EVAL_CHAT}): answers can be simple or "
            "wrong. Your administrator can serve bigger models.")
    for app, expected in (("customer-service", one), ("code-assistant", one), ("knowledge-base", both)):
        open_page(browser, ui.apps[app] + "/")
        notice = browser.find_element("css selector", "#evaluation-notice")
        assert notice.text == expected and notice.is_displayed(), app
        assert notice.get_attribute("role") == "note"
        # right under the page's header
        assert browser.execute_script("return document.querySelector('header').nextElementSibling.id") == \
            "evaluation-notice"
        assert console_errors(browser) == []
    open_page(browser, ui.apps["customer-service-nogw"] + "/")  # no evaluation model: no notice
    assert browser.find_elements("css selector", "#evaluation-notice") == []


MARKDOWN_ANSWER = """Here is how to **reverse** a list in Python:

1. Use slicing: `xs[::-1]`
2. Or call `xs.reverse()` in place

```python
def rev(xs):
    return xs[::-1]  # <b>not bold</b>
```

Careful: <img src=x onerror="window.__pwned = 1"> and <script>window.__pwned = 2</script> are text.
- a bullet
- another"""


@needs_webdriver
def test_code_assistant_renders_markdown_answers_safely(ui, browser):
    page = PAGES["code-assistant"]
    open_page(browser, ui.apps["code-assistant"] + "/")
    ui.engine.answer = MARKDOWN_ANSWER
    try:
        ask(browser, page, "reverse a list")
        wait_js(browser, "return document.body.dataset.status === 'answered'", what="the answer")
    finally:
        ui.engine.answer = None
    answer = browser.find_element("css selector", "#answer")
    code = answer.find_elements("css selector", "pre > code")
    assert len(code) == 1
    assert code[0].get_attribute("class") == "language-python"
    assert code[0].get_attribute("textContent") == "def rev(xs):\n    return xs[::-1]  # <b>not bold</b>"
    assert [li.text for li in answer.find_elements("css selector", "ol > li")] == [
        "Use slicing: xs[::-1]", "Or call xs.reverse() in place"]
    assert [c.text for c in answer.find_elements("css selector", "ol code")] == ["xs[::-1]", "xs.reverse()"]
    assert [li.text for li in answer.find_elements("css selector", "ul > li")] == ["a bullet", "another"]
    assert answer.find_element("css selector", "p > strong").text == "reverse"
    # the model's HTML is shown as text, never inserted or run
    assert answer.find_elements("css selector", "img, script, b") == []
    assert browser.execute_script("return window.__pwned === undefined")
    assert '<img src=x onerror="window.__pwned = 1">' in answer.text
    assert "<script>window.__pwned = 2</script>" in answer.text
    assert console_errors(browser) == []

    # the renderer itself, on the shapes small models write (serialised with the browser's own escaping)
    render = "const d = document.createElement('div'); d.append(renderMarkdown(arguments[0])); return d.innerHTML;"
    cases = {
        "one\ntwo\n\nthree": "<p>one<br>two</p><p>three</p>",
        "```\nunclosed <tag> & more": "<pre><code>unclosed &lt;tag&gt; &amp; more</code></pre>",
        "3. three\n4. four": '<ol start="3"><li>three</li><li>four</li></ol>',
        "## Title\ntext `a<b` x": "<h4>Title</h4><p>text <code>a&lt;b</code> x</p>",
        "1. step\n   ```js\n   let x = 1;\n   ```\n":
            '<ol><li>step</li></ol><pre><code class="language-js" data-lang="js">let x = 1;</code></pre>',
        '```"><img src=x onerror=alert(1)>\nx\n```': "<pre><code>x</code></pre>",
        "**<i>b</i>**": "<p><strong>&lt;i&gt;b&lt;/i&gt;</strong></p>",
        "---": "<hr>",
    }
    for source, html in cases.items():
        assert browser.execute_script(render, source) == html, source
    assert browser.execute_script("return window.__pwned === undefined")
    assert console_errors(browser) == []


def test_the_pages_load_the_shared_script_the_app_serves(ui):
    for name, url in ui.apps.items():
        status, hdrs, body = call(url + "/appkit.js")
        assert status == 200 and hdrs["Content-Type"].startswith("text/javascript"), name
        assert body == (APPS_DIR / "common" / "appkit.js").read_bytes()
        page = call(url + "/")[2].decode()
        assert re.search(r'<script src="appkit\.js"></script>', page), name


# ---- signing in ---------------------------------------------------------------------------------

@needs_webdriver
def test_signing_in_in_the_browser_returns_to_the_page_and_a_lost_session_goes_back_to_sign_in(ui):
    """The whole browser path: an app page without a session lands on the gateway's sign-in page;
    a wrong password says so there; the right one comes back to the page asked for (its ?q= too),
    and the session cookie is HttpOnly (no script reads it). When the session goes, the page's next
    API call sends the browser to sign in again, with ``next`` back to that page."""
    driver = webdriver_chromium()
    driver.set_page_load_timeout(60)
    try:
        kb = ui.apps["knowledge-base"]
        sign_in_in_the_browser(driver, ui, kb + "/?q=When%20does%20the%20parking%20garage%20open%3F",
                               password="not the password at all")
        message = wait_js(driver, "const m = document.querySelector('#message'); return m && m.textContent",
                          what="the sign-in page's message")
        assert message == "Wrong name or password."
        assert "/auth/login" in driver.current_url
        console_errors(driver)  # the 401 of that answer is in the console; from here on nothing may be
        driver.find_element("css selector", "#name").send_keys(USER)
        driver.find_element("css selector", "#password").send_keys(PASSWORD)
        driver.find_element("css selector", "#submit").click()
        wait_js(driver, "return document.body.dataset.status === 'answered'", what="the deep-linked answer")
        assert driver.current_url.startswith(kb + "/?q=")
        assert "parking garage" in driver.find_element("css selector", "#answer").text.lower()
        cookie = driver.get_cookie("appliance_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        assert not cookie.get("secure")  # plain HTTP here (over TLS it is Secure: test_auth.py)
        assert driver.execute_script("return document.cookie") == ""
        # the same login serves every app of the box (another port, the same host)
        driver.get(ui.apps["code-assistant"] + "/")
        wait_js(driver, "return document.body.dataset.ready === '1'", what="the second app")
        assert driver.execute_script("return document.body.dataset.status") == "ready"
        assert console_errors(driver) == []
        # the session goes: the next API call sends the browser to sign in, then back here
        driver.delete_all_cookies()
        page = PAGES["code-assistant"]
        ask(driver, page, page["question"])
        wait_js(driver, "return location.pathname === '/auth/login'", what="the sign-in page again")
        from urllib.parse import parse_qs, urlsplit

        assert parse_qs(urlsplit(driver.current_url).query)["next"] == [ui.apps["code-assistant"] + "/"]
    finally:
        driver.quit()


@needs_webdriver
def test_knowledge_base_page_uploads_a_file_as_multipart(ui, browser, tmp_path):
    """The file picker sends the file as multipart/form-data (the only non-JSON body an app takes)."""
    doc = tmp_path / "canteen.md"
    doc.write_text("# Canteen\n\nThe canteen serves lunch from 11:30 to 14:00 on weekdays.\n")
    open_page(browser, ui.apps["knowledge-base"] + "/")
    browser.find_element("css selector", "#file").send_keys(str(doc))
    status = wait_js(browser, "const s = document.querySelector('#upload-status').textContent;"
                              "return s.startsWith('Added') || s.startsWith('Upload failed') ? s : ''",
                     what="the upload's result")
    assert status.startswith("Added canteen.md: 1 chunks embedded with test-embed"), status
    wait_js(browser, "return [...document.querySelectorAll('#docs li')].some(li => li.textContent.includes("
                     "'canteen.md'))", what="the document in the list")
    assert console_errors(browser) == []
    names = [d["name"] for d in call(ui.apps["knowledge-base"] + "/api/documents")[2]["documents"]]
    assert "canteen.md" in names
    log_text = (ui.root / "knowledge-base.log").read_text()
    assert '"path":"/api/documents","status":201' in log_text and '"ctype":"multipart/form-data"' in log_text
