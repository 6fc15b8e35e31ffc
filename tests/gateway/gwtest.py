"""Helpers for the gateway and app tests: real processes on free localhost ports.

The process-level tests run the gateway (``images/gateway/main.py``) and the apps as plain
Python processes against a small stdlib engine (``upstream.py``) or the demo engine, with
a real state database and real key files -- fast coverage without Docker. The Docker
tests (``test_stack_docker.py``) run the same code in the real demo stack.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from tests.support import poll

REPO = Path(__file__).resolve().parents[2]
GATEWAY_MAIN = REPO / "images" / "gateway" / "main.py"
UPSTREAM = Path(__file__).resolve().parent / "upstream.py"
DEMO_ENGINE = REPO / "images" / "demo" / "engine" / "main.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers_http(url: str) -> bool:
    """Whether something answers HTTP at ``url`` now (any status)."""
    try:
        urllib.request.urlopen(url, timeout=1).read()
        return True
    except urllib.error.HTTPError:
        return True  # it answers
    except OSError:
        return False


def wait_http(url: str, timeout_s: float = 15.0) -> None:
    if not poll(lambda: answers_http(url), timeout_s, interval_s=0.05)[0]:
        raise TimeoutError(f"{url} did not answer within {timeout_s}s")


def call(url: str, *, key: str | None = None, body: dict | None = None, method: str | None = None,
         headers: dict | None = None, timeout_s: float = 10.0):
    """(status, headers, parsed JSON or raw bytes) of one HTTP request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, hdrs, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, hdrs, json.loads(raw)
    except ValueError:
        return status, hdrs, raw


class Proc:
    def __init__(self, argv: list[str], env: dict, log: Path):
        self.log = log
        self._fh = open(log, "wb")
        self.p = subprocess.Popen(argv, env={**os.environ, **env}, stdout=self._fh, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """SIGTERM and wait (what a test that checks a clean shutdown wants: the gateway flushes usage)."""
        stop_all([self])

    def output(self) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")


def stop_all(procs: list[Proc], *, graceful: bool = True) -> None:
    """End processes together: SIGTERM (SIGKILL when not ``graceful``, for cleanup after a test)
    to all of them first, then wait for each (SIGKILL after 10 s), so their shutdowns overlap."""
    running = [p for p in procs if p.p.poll() is None]
    for p in running:
        if graceful:
            p.p.terminate()
        else:
            p.p.kill()
    for p in running:
        try:
            p.p.wait(10)
        except subprocess.TimeoutExpired:
            p.p.kill()
            p.p.wait()
    for p in procs:
        p._fh.close()


def eventually(check, timeout_s: float = 8.0, interval_s: float = 0.1):
    """Poll ``check()`` until truthy (bounded, tests.support.poll); returns (value, seconds waited)."""
    value, waited, _ = poll(check, timeout_s, interval_s)
    return value, waited


def chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def needs_chromium(test):
    """For a test that drives a real headless Chromium: marks it ``browser`` (not in the fast tier)
    and skips it when none is installed, except under CI, where a missing browser fails."""
    import pytest

    test = pytest.mark.browser(test)
    missing = chromium() is None and not os.environ.get("CI")
    return pytest.mark.skipif(missing, reason="chromium is not installed (.ci/run installs it; "
                                              "under CI a missing browser fails)")(test)


def browser_dom(url: str, tmp_dir: Path, budget_ms: int = 15000, timeout_s: float = 90.0) -> str:
    """The DOM of ``url`` after a real headless Chromium ran its scripts.

    ``--virtual-time-budget`` lets the page's timers and fetches finish (virtual time
    pauses while network requests are pending) before ``--dump-dom`` prints the DOM.
    """
    argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_dir}",
            f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    if res.returncode != 0 or "<html" not in res.stdout:
        raise AssertionError(f"chromium failed (rc={res.returncode}): {res.stderr[-800:]}")
    return res.stdout


def chromedriver() -> str | None:
    import shutil

    return shutil.which("chromedriver") or next((p for p in ("/usr/bin/chromedriver",) if os.path.exists(p)), None)


def needs_webdriver(test):
    """For a test that drives headless Chromium interactively through selenium and chromedriver
    (clicks, state while a request is in flight, the console log): marks it ``browser`` and skips
    it when chromium, chromedriver or selenium is missing, except under CI, where that fails."""
    import importlib.util

    import pytest

    test = needs_chromium(test)
    missing = [name for name, ok in (("chromedriver", chromedriver() is not None),
                                     ("selenium", importlib.util.find_spec("selenium") is not None)) if not ok]
    return pytest.mark.skipif(bool(missing) and not os.environ.get("CI"),
                              reason=f"{' and '.join(missing)} not installed (Debian chromium-driver; "
                                     "pip install selenium: the test extra)")(test)


def webdriver_chromium():
    """A selenium WebDriver on headless Chromium (Debian's chromedriver; no download), keeping the
    browser console log (``driver.get_log("browser")``). The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--window-size=1280,900"):
        options.add_argument(arg)
    options.binary_location = chromium()
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver()), options=options)


def console_errors(driver, *, network_ok: bool = False) -> list[dict]:
    """The browser console's errors since the last call (reading the log empties it); with
    ``network_ok`` a failed response the test provoked (a 503, say) is not counted, script errors are."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"
            and not (network_ok and e.get("source") == "network")]


# ---- sign-in (images/gateway/auth.py, authweb.py; docs/users.md) -----------------------------------
GATEWAY_DIR = REPO / "images" / "gateway"
SESSION_COOKIE = "appliance_session"


def gateway_modules():
    """images/gateway's auth and authweb modules, imported in this process (their directory on the path)."""
    import sys

    if str(GATEWAY_DIR) not in sys.path:
        sys.path.insert(0, str(GATEWAY_DIR))
    import auth
    import authweb

    return auth, authweb


class AppThread:
    """An aiohttp application served for real on a free loopback port by a thread of this process
    (``ssl_context``: HTTPS). Stop it with :meth:`stop`."""

    def __init__(self, app, *, ssl_context=None, name: str = "app-server"):
        import asyncio
        import threading

        from aiohttp import web

        self.port = free_port()
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start():
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=ssl_context).start()
            ready.set()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())
            self.loop.close()

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()
        if not ready.wait(15):
            raise TimeoutError(f"{name} did not start")

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(15)


class AuthServer(AppThread):
    """The gateway's sign-in routes alone: ``authweb.install`` on a bare aiohttp app (a real HTTP
    server; ``records`` are its log lines)."""

    def __init__(self, config_dir, *, auth=None, ssl_context=None):
        from aiohttp import web

        _, authweb = gateway_modules()
        self.records: list[dict] = []
        app = web.Application()
        authweb.install(app, str(config_dir), self.records.append, auth=auth)
        self.auth = app[authweb.AUTH_KEY]
        super().__init__(app, ssl_context=ssl_context, name="auth-server")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fetch(url: str, *, method: str = "GET", data: bytes | None = None, headers: dict | None = None,
          timeout_s: float = 10.0, context=None):
    """(status, headers as a Message, body bytes) of one request, redirects NOT followed."""
    handlers = [_NoRedirect()] + ([urllib.request.HTTPSHandler(context=context)] if context else [])
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=timeout_s) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def session_cookie(headers) -> str | None:
    """``appliance_session=<token>`` from a response's Set-Cookie (None when it sets none or clears it)."""
    for value in headers.get_all("Set-Cookie") or []:
        first = value.split(";", 1)[0].strip()
        if first.startswith(SESSION_COOKIE + "=") and first != SESSION_COOKIE + "=" and first != \
                SESSION_COOKIE + '=""':
            return first
    return None


def sign_in(base_url: str, name: str, password: str) -> str:
    """Sign in at the gateway (or an :class:`AuthServer`) with a password; returns the Cookie header
    value ``appliance_session=...`` to send to the apps (``call(..., headers={"Cookie": c})``)."""
    status, hdrs, body = fetch(base_url.rstrip("/").removesuffix("/v1") + "/auth/login", method="POST",
                               data=json.dumps({"name": name, "password": password}).encode(),
                               headers={"Content-Type": "application/json"})
    cookie = session_cookie(hdrs)
    if status != 200 or cookie is None:
        raise AssertionError(f"sign-in as {name} failed: {status} {body[:300]!r}")
    return cookie


def redeem_link(link_url: str) -> str:
    """Open a one-time sign-in link (``appliance users login-link NAME``); returns the session cookie."""
    status, hdrs, body = fetch(link_url)
    cookie = session_cookie(hdrs)
    if status != 303 or cookie is None:
        raise AssertionError(f"the sign-in link was refused: {status} {body[:300]!r}")
    return cookie


def signed_in_url(link_url: str, next_url: str) -> str:
    """A URL that signs a browser in with a one-time link, then lands on ``next_url`` (same host):
    for ``browser_dom`` and selenium, which start from a URL and keep the cookie."""
    from urllib.parse import quote

    return f"{link_url}&next={quote(next_url, safe='')}"


def make_user(name: str, password: str, *, role: str = "user", store=None, export_dir=None) -> None:
    """Add a user through the library (as `appliance users add` does) if not there yet."""
    from appliance.gateway import users as U

    if name not in {u.name for u in U.list_users(store=store, usage_dir=export_dir).users}:
        U.add_user(name, role=role, password=password, store=store, export_dir=export_dir)


def stack_login_link(stack, user: str = "admin") -> str:
    """A fresh one-time sign-in link from a Docker demo stack's CLI (``DemoStack.cli``): init made
    the first admin. Each use needs its own link (``redeem_link`` / ``signed_in_url``)."""
    res = stack.cli("users", "login-link", user, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["url"]


def stack_session(stack, user: str = "admin") -> str:
    """The Cookie header value of a session for ``user`` on a Docker demo stack (through a link)."""
    return redeem_link(stack_login_link(stack, user))


def raw_exchange(host: str, port: int, *parts: bytes, pause_s: float = 0.2, timeout_s: float = 10.0) -> bytes:
    """Send ``parts`` on one TCP connection (``pause_s`` between them: a body after its head arrives
    in a packet of its own) and return everything the server sends until it closes."""
    import time

    with socket.create_connection((host, port), timeout=timeout_s) as s:
        for i, part in enumerate(parts):
            if i:
                time.sleep(pause_s)
            s.sendall(part)
        data = b""
        while True:
            try:
                piece = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not piece:
                break
            data += piece
        return data


def log_records(gw) -> list[dict]:
    """The JSON lines of a gateway process's log (``gateway`` fixture object)."""
    out = []
    for line in gw.proc.log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
