"""The edge attacked on the REAL running demo stack (issue 14's Must-show), as someone on the same
network would: slow and half-sent requests, malformed and oversized bodies, a JSON bomb,
cross-site requests to the apps, the engines' own addresses, and bad input to ``init`` while the
stack runs. One demo stack per module (tests/stack_support.py: unique instance, data dir and
ports; purged afterwards). All traffic goes to loopback or to this stack's container addresses.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from gwtest import call, raw_exchange, stack_session

from appliance.runtime import labels as L
from tests.stack_support import DemoStack

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hello"}]}


class EdgeStack(DemoStack):
    def __init__(self, root: Path):
        super().__init__(root, "edge")

    def create_key(self) -> str:
        res = self.cli("keys", "create", "--name", f"edge-{time.monotonic_ns()}", "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["key"]

    def containers(self) -> dict:
        """service -> docker-py container of this stack."""
        import docker

        client = docker.from_env()
        try:
            found = client.containers.list(all=True, filters={"label": f"{L.INSTANCE}={self.instance}"})
            return {c.labels.get(L.SERVICE): c for c in found}
        finally:
            client.close()

    def state(self) -> dict:
        """What must not change when a command is refused: every container's id and start time."""
        return {name: (c.id, c.attrs["State"]["StartedAt"]) for name, c in self.containers().items()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = EdgeStack(tmp_path_factory.mktemp("edge"))
    try:
        res = s.init_demo("--quiet")
        assert res.returncode == 0, f"init failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        s.key = s.create_key()
        time.sleep(1.5)  # the new key reaches the gateway
        yield s
    finally:
        s.purge(down_first=True)


def _gateway_rss_kib(stack) -> int:
    pid = stack.containers()["gateway"].attrs["State"]["Pid"]
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS for the gateway's process")


def _post_bytes(url: str, key: str, data: bytes) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_thousand_slow_half_requests_leave_a_legitimate_request_answered_within_a_second(stack):
    held = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=5)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")   # and never more
            held.append(s)
        time.sleep(0.5)
        t0 = time.monotonic()
        status, _, body = call(stack.gateway + "/v1/chat/completions", key=stack.key, body=CHAT, timeout_s=5)
        elapsed_s = time.monotonic() - t0
        assert status == 200, body
        assert elapsed_s < 1.0, f"answered after {elapsed_s:.2f} s behind 1,000 half-sent requests"
    finally:
        for s in held:
            s.close()


def test_chunked_minus_one_and_oversized_chunked_bodies_are_refused_without_memory_growth(stack):
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + stack.key.encode()
            + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    before = _gateway_rss_kib(stack)
    answer = raw_exchange("127.0.0.1", stack.gateway_port, head + b"-1\r\n" + b"x" * 64, timeout_s=15)
    assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.0 400"), answer[:200]
    # 64 chunks of 1 MiB offered (64 MiB, twice the 32 MiB limit): 413 once past the limit
    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=30) as s:
        s.sendall(head)
        piece = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
        try:
            for _ in range(64):
                s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = s.recv(65536)
    assert answer[:12] in (b"HTTP/1.1 413", b"HTTP/1.0 413"), answer[:200]
    grown_kib = _gateway_rss_kib(stack) - before
    # the limit is 32 MiB and the body is never kept whole past it: nowhere near the 64 MiB sent
    assert grown_kib < 40 * 1024, f"gateway RSS grew by {grown_kib} KiB"
    assert call(stack.gateway + "/v1/chat/completions", key=stack.key, body=CHAT)[0] == 200


def test_a_nested_json_bomb_is_400(stack):
    for depth in (40, 100_000):
        bomb = b'{"model":"demo-chat","messages":' + b"[" * depth + b"]" * depth + b"}"
        status, body = _post_bytes(stack.gateway + "/v1/chat/completions", stack.key, bomb)
        assert status == 400 and body["error"]["code"] == "bad_request", (depth, body)
    assert call(stack.gateway + "/v1/chat/completions", key=stack.key, body=CHAT)[0] == 200


@pytest.mark.parametrize("args", [("--bind", "notanaddress"), ("--gateway-port", "99999"),
                                  ("--app-port-base", "65535"), ("duplicate",)],
                         ids=["bind", "port-99999", "app-ports-past-65535", "duplicate-ports"])
def test_bad_network_input_to_init_is_exit_2_and_nothing_changes(stack, args):
    if args == ("duplicate",):
        args = ("--gateway-port", str(stack.gateway_port), "--app-port-base", str(stack.gateway_port))
    before, config = stack.state(), stack.cli("config", "show", "--json").stdout
    res = stack.cli("init", "--demo", "--yes", "--models", "demo-chat,demo-embed", *args)
    assert res.returncode == 2, (res.returncode, res.stdout[-500:], res.stderr[-500:])
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr   # one line says what and how to fix
    assert stack.state() == before and stack.cli("config", "show", "--json").stdout == config


def test_many_clients_at_once_are_all_answered(stack):
    """The caps shed idle connections, never requests in flight: 50 concurrent clients all get 200."""
    results: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        status = call(stack.gateway + "/v1/chat/completions", key=stack.key, body=CHAT, timeout_s=30)[0]
        with lock:
            results.append(status)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 50


# each app's state-changing call, with a body it accepts
APP_WRITES = {"customer-service": ("/api/chat", {"question": "What are your opening hours?"}),
              "knowledge-base": ("/api/documents", {"name": "planted.md", "text": "planted by another site"}),
              "code-assistant": ("/api/ask", {"prompt": "write hello world"})}


def _app_urls(stack) -> dict[str, str]:
    found = {name: c.labels.get("appliance.endpoint", "") for name, c in stack.containers().items()}
    return {name: found[name].rstrip("/") for name in APP_WRITES if found.get(name)}


def test_each_app_refuses_a_cross_origin_post_with_403_and_nothing_changes(stack):
    cookie = stack_session(stack)
    apps = _app_urls(stack)
    assert set(apps) == set(APP_WRITES)
    kb = apps["knowledge-base"]
    status, _, docs_before = call(kb + "/api/documents", headers={"Cookie": cookie})
    assert status == 200, docs_before
    for app, url in apps.items():
        path, payload = APP_WRITES[app]
        for origin in ("http://evil.example", "null", stack.gateway):
            status, _, body = call(url + path, body=payload, headers={"Cookie": cookie, "Origin": origin})
            assert status == 403, (app, origin, status, body)
    assert call(kb + "/api/documents", headers={"Cookie": cookie})[2] == docs_before   # nothing planted
    # the app's own origin is served (the refusal above was the origin, not the session)
    status, _, body = call(apps["customer-service"] + "/api/chat", body=APP_WRITES["customer-service"][1],
                           headers={"Cookie": cookie, "Origin": apps["customer-service"]}, timeout_s=60)
    assert status == 200, body


def test_an_app_api_call_without_a_session_is_401_and_a_page_sends_to_sign_in(stack):
    import urllib.error
    import urllib.request

    for app, url in _app_urls(stack).items():
        path, payload = APP_WRITES[app]
        status, _, body = call(url + path, body=payload)
        assert status == 401 and body.get("login_url"), (app, status, body)
        assert call(url + "/api/info")[0] == 401

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None

        try:
            urllib.request.build_opener(NoRedirect).open(url + "/", timeout=10)
            raise AssertionError(f"{app}: the page was served without a session")
        except urllib.error.HTTPError as exc:
            assert exc.code == 303 and "/auth/login" in exc.headers["Location"], (app, exc.code)


def test_a_stack_with_the_admins_certificate_serves_https_only(tmp_path_factory):
    """``init --tls-cert/--tls-key`` (what a LAN bind asks for; here on loopback, so no traffic leaves
    the host): the gateway and the apps answer HTTPS with that certificate, plain HTTP is refused,
    the sign-in cookie is Secure, and the apps still reach the gateway (an app page signed in)."""
    import ssl
    import urllib.error
    import urllib.request

    from appliance.deploy import tls

    root = tmp_path_factory.mktemp("edge-tls")
    cert = tls.ensure_self_signed("127.0.0.1", root / "admin")      # stands in for the admin's own
    s = EdgeStack(root)
    try:
        res = s.init_demo("--quiet", "--tls-cert", cert.cert_path, "--tls-key", cert.key_path, "--json")
        assert res.returncode == 0, f"init failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        result = json.loads(res.stdout)
        assert result["tls"]["fingerprint_sha256"] == cert.fingerprint_sha256
        gateway = result["endpoints"]["gateway"]
        assert gateway.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=cert.cert_path)          # verified: name and chain

        def get(url: str, headers: dict | None = None):
            req = urllib.request.Request(url, headers=headers or {})
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=15) as resp:
                    return resp.status, resp.headers, resp.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.headers, exc.read()

        assert get(gateway.removesuffix("/v1") + "/healthz")[0] == 200
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(gateway.replace("https://", "http://").removesuffix("/v1") + "/healthz",
                                   timeout=10).read()
        link = json.loads(s.cli("users", "login-link", "admin", "--json").stdout)["url"]
        assert link.startswith("https://")

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None

        opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=ctx))
        try:
            opener.open(link, timeout=15)
            raise AssertionError("the sign-in link did not redirect")
        except urllib.error.HTTPError as exc:
            assert exc.code == 303
            cookie_line = exc.headers["Set-Cookie"]
        assert "Secure" in cookie_line and "HttpOnly" in cookie_line
        cookie = cookie_line.split(";", 1)[0]
        for app, url in result["endpoints"].items():
            if app == "gateway":
                continue
            assert url.startswith("https://")
            status, _, body = get(url + "/api/info", {"Cookie": cookie})
            assert status == 200, (app, body[:200])
    finally:
        s.purge(down_first=True)
