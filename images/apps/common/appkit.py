"""Plumbing shared by the sample apps: the gateway client and a small JSON/static web server.

There is one copy: the image build (appliance.runtime.images.build_sources) puts the files of
images/apps/common/ beside every app's main.py in /app, and each main.py also looks in ../common
so it runs from the source tree as it is. Stdlib only.

Environment: PORT (8080), GATEWAY_URL (the gateway inside the stack), APP_API_KEY_FILE
(the app's own key, mounted read-only; re-read when it changes) or APP_API_KEY,
APP_TITLE, APP_EVALUATION_MODELS (comma-separated: the built-in small evaluation models among
those the app uses, set by the runtime; ``/api/info`` reports them and the pages say so).
Request logs are one JSON line each, without bodies or keys.

What the pages share is here too: ``appkit.js`` (beside this file) is served at ``/appkit.js``
-- the busy state while a request is in flight, errors in plain words, the evaluation notice.
When the model cannot answer (the gateway or its engine is down, starting or too slow:
connection refused, 502/503/504, a timeout) every app answers the same
``503 {"error": MODEL_UNAVAILABLE, "reason": "model_unavailable", "detail": ...}``.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
_LOG_LOCK = threading.Lock()
SHARED_STATIC = {"/appkit.js": os.path.join(HERE, "appkit.js")}  # the pages' shared script
MODEL_UNAVAILABLE = ("The model is not available right now (it may be starting or stopped). "
                     "Try again in a minute; an administrator can check `appliance status`.")
UNAVAILABLE_STATUSES = (502, 503, 504)  # the gateway: engine unreachable, loading/overloaded, timed out
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json", ".yaml": "text/yaml; charset=utf-8",
                 ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}


def log(record: dict) -> None:
    line = json.dumps({"ts": round(time.time(), 3), **record}, separators=(",", ":")) + "\n"
    with _LOG_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def base_url(url: str) -> str:
    """``http://host:port`` from a gateway URL given with or without the ``/v1`` suffix."""
    url = url.strip().rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


class GatewayError(Exception):
    """A gateway call that failed: ``status`` and ``message`` are what the app answers its page;
    ``reason`` a stable word for the page (``model_unavailable``), ``detail`` the cause, for admins."""

    def __init__(self, status: int, message: str, reason: str = "", detail: str = ""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.detail = detail


def model_unavailable(detail: str) -> GatewayError:
    """The one answer for "the model cannot answer now", whatever the cause (``detail``)."""
    return GatewayError(503, MODEL_UNAVAILABLE, "model_unavailable", detail)


def evaluation_models() -> list[str]:
    """APP_EVALUATION_MODELS as a list: the small built-in evaluation models this app uses."""
    return [m.strip() for m in os.environ.get("APP_EVALUATION_MODELS", "").split(",") if m.strip()]


def app_info(app: str, title: str, **fields) -> dict:
    """The part of ``GET /api/info`` every app shares: app, title (APP_TITLE overrides it),
    the app's own ``fields`` and ``evaluation_models``."""
    return {"app": app, "title": os.environ.get("APP_TITLE", title), **fields,
            "evaluation_models": evaluation_models()}


class Gateway:
    """Calls the appliance gateway with this app's own key."""

    def __init__(self) -> None:
        self.url = base_url(os.environ.get("GATEWAY_URL", "http://gateway:8080"))
        self.key_file = os.environ.get("APP_API_KEY_FILE", "/run/appliance/api_key")
        self._key = os.environ.get("APP_API_KEY", "")
        self._key_sig = None
        self._models: tuple[float, list[str]] = (0.0, [])

    def key(self) -> str:
        if os.environ.get("APP_API_KEY"):
            return self._key
        try:
            st = os.stat(self.key_file)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
            if sig != self._key_sig:
                with open(self.key_file, encoding="utf-8") as fh:
                    self._key = fh.read().strip()
                self._key_sig = sig
        except OSError:
            self._key = ""
        return self._key

    def request(self, path: str, body: dict | None = None, timeout_s: float = 120.0) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data is not None else "GET")
        req.add_header("Authorization", f"Bearer {self.key()}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except (OSError, ValueError, KeyError, TypeError):
                message = exc.reason
            if exc.code in UNAVAILABLE_STATUSES:
                raise model_unavailable(f"gateway {exc.code}: {message}") from None
            raise GatewayError(exc.code, f"gateway: {message}") from None
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut off
            raise model_unavailable(f"gateway unreachable: {type(exc).__name__}") from None
        except ValueError:
            raise GatewayError(502, "gateway: the answer is not JSON") from None

    def models(self) -> list[str]:
        """Models this app's key may use (cached 10 s)."""
        ts, cached = self._models
        if time.monotonic() - ts < 10 and cached:
            return cached
        names = [m["id"] for m in self.request("/v1/models").get("data", [])]
        self._models = (time.monotonic(), names)
        return names

    def pick(self, env_name: str, hints: tuple[str, ...] = (), avoid: tuple[str, ...] = ()) -> str:
        """The model named by ``env_name``, else the first visible one matching a hint."""
        name = os.environ.get(env_name)
        if name:
            return name
        names = self.models()
        for n in names:
            if any(h in n.lower() for h in hints):
                return n
        rest = [n for n in names if not any(a in n.lower() for a in avoid)]
        if not (rest or names):
            raise GatewayError(503, "no model is available to this app's key")
        return (rest or names)[0]

    def chat(self, model: str, messages: list[dict], **extra) -> tuple[str, dict]:
        out = self.request("/v1/chat/completions", {"model": model, "messages": messages, **extra})
        try:
            return out["choices"][0]["message"]["content"], out
        except (KeyError, IndexError, TypeError):
            raise GatewayError(502, "the engine's answer has no message") from None

    def embed(self, model: str, texts: list[str], batch: int = 32) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), batch):
            out = self.request("/v1/embeddings", {"model": model, "input": texts[start:start + batch]})
            data = sorted(out.get("data", []), key=lambda d: d.get("index", 0))
            vectors += [d["embedding"] for d in data]
        if len(vectors) != len(texts):
            raise GatewayError(502, "the embedding model returned the wrong number of vectors")
        return vectors


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def make_handler(routes: dict, static_dir: str, max_body: int = 16 << 20):
    """A request handler: ``routes[(method, path)](request) -> (status, obj | bytes, content_type)``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "appliance-app"
        sys_version = ""
        disable_nagle_algorithm = True

        def log_message(self, format, *args):  # noqa: A002 -- our JSON line replaces it
            pass

        def _reply(self, status: int, payload, ctype: str = "application/json") -> None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def _handle(self, method: str) -> None:
            t0 = time.perf_counter()
            url = urlsplit(self.path)
            status = 500
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > max_body:
                    raise HTTPError(413, "request too large")
                self.body = self.rfile.read(length) if length else b""
                self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                self.route = url.path
                fn = routes.get((method, url.path))
                if fn is None:
                    prefix = next((p for (m, p) in routes if m == method and p.endswith("/")
                                   and url.path.startswith(p)), None)
                    fn = routes.get((method, prefix)) if prefix else None
                if fn is None and method == "GET":
                    status, payload, ctype = self._static(url.path)
                elif fn is None:
                    raise HTTPError(404, f"no route {method} {url.path}")
                else:
                    status, payload, ctype = fn(self)
                self._reply(status, payload, ctype)
            except (HTTPError, GatewayError) as exc:
                status, reason, detail = exc.status, getattr(exc, "reason", ""), getattr(exc, "detail", "")
                self._reply(status, {"error": exc.message, **({"reason": reason} if reason else {}),
                                     **({"detail": detail} if detail else {})})
                if reason:
                    log({"event": reason, "path": url.path, "detail": detail[:300]})
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            except Exception as exc:  # a bug: answer 500, keep serving
                status = 500
                self._reply(500, {"error": f"internal error: {type(exc).__name__}"})
                log({"event": "error", "path": url.path, "error": f"{type(exc).__name__}: {exc}"[:300]})
            log({"method": method, "path": url.path, "status": status,
                 "ms": round((time.perf_counter() - t0) * 1000, 1)})

        def _static(self, path: str):
            if path in SHARED_STATIC:
                with open(SHARED_STATIC[path], "rb") as fh:
                    return 200, fh.read(), CONTENT_TYPES[".js"]
            if path == "/":
                path = "/index.html"
            full = os.path.realpath(os.path.join(static_dir, path.lstrip("/")))
            if not full.startswith(os.path.realpath(static_dir) + os.sep) or not os.path.isfile(full):
                raise HTTPError(404, f"no page {path}")
            with open(full, "rb") as fh:
                data = fh.read()
            return 200, data, CONTENT_TYPES.get(os.path.splitext(full)[1], "application/octet-stream")

        def json_body(self) -> dict:
            try:
                obj = json.loads(self.body or b"{}")
            except ValueError:
                raise HTTPError(400, "the body must be JSON") from None
            if not isinstance(obj, dict):
                raise HTTPError(400, "the body must be a JSON object")
            return obj

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

        def do_DELETE(self):
            self._handle("DELETE")

    return Handler


def health(_req):
    return 200, {"status": "ok"}, "application/json"


def serve(app: str, routes: dict, static_dir: str) -> None:
    routes = {("GET", "/healthz"): health, **routes}
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), make_handler(routes, static_dir))
    server.daemon_threads = True
    import signal

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    log({"event": "start", "app": app, "port": port, "gateway": os.environ.get("GATEWAY_URL", "")})
    server.serve_forever(poll_interval=0.5)
    server.server_close()
