"""Plumbing shared by the sample apps: the gateway client and a small JSON/static web server.

There is one copy: the image build (appliance.runtime.images.build_sources) puts the files of
images/apps/common/ beside every app's main.py in /app, and each main.py also looks in ../common
so it runs from the source tree as it is. Stdlib only.

Environment: PORT (8080), APP_TLS_CERT / APP_TLS_KEY (PEM files: serve HTTPS), GATEWAY_URL (the
gateway inside the stack), APP_API_KEY_FILE
(the app's own key, mounted read-only; re-read when it changes) or APP_API_KEY,
APP_TITLE, APP_EVALUATION_MODELS (comma-separated: the built-in small evaluation models among
those the app uses, set by the runtime; ``/api/info`` reports them and the pages say so).
Request logs are one JSON line each, without bodies or keys.

What the pages share is here too: ``appkit.js`` (beside this file) is served at ``/appkit.js``
-- the busy state while a request is in flight, errors in plain words, the evaluation notice.
When the model cannot answer (the gateway or its engine is down, starting or too slow:
connection refused, 502/503/504, a timeout) every app answers the same
``503 {"error": MODEL_UNAVAILABLE, "reason": "model_unavailable", "detail": ...}``.

Who may use an app (docs/users.md): a signed-in user of the box. Every request but ``GET
/healthz`` needs the gateway's session cookie (``appliance_session``): the app asks the gateway
``GET /auth/session`` with it (2 s timeout; a yes is remembered 5 s per session, at most 1024
sessions) and calls the gateway for that user with its own key, saying who in
``X-Appliance-User``. Without a session: ``401 {"error": "sign in required", "reason":
"sign_in_required", "login_url"}`` for the API (``/api/``, ``/profile/``, anything but a GET),
303 to the gateway's sign-in page (``next`` = this page) for a page. The gateway's answer
unavailable: 503 ``auth_unavailable`` (closed, never open). A state-changing request
(POST/PUT/PATCH/DELETE) from another origin is 403: its ``Origin`` must be this app's own
``scheme://Host``, and without an ``Origin`` its ``Sec-Fetch-Site`` must be absent (curl, SDKs)
or ``same-origin``. Bodies: ``application/json`` only, unless a route says otherwise
(:func:`accepts`: the knowledge base's upload takes ``multipart/form-data`` too), else 415.
All of this is decided from the head, before the body is read. GATEWAY_AUTH_URL (default:
GATEWAY_URL's base) is where sessions are checked; GATEWAY_PUBLIC_URL's scheme and port, with
the host name the browser used for the app, where people sign in (cookies are per host name).
"""

from __future__ import annotations

import collections
import hashlib
import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
_LOG_LOCK = threading.Lock()
SHARED_STATIC = {"/appkit.js": os.path.join(HERE, "appkit.js")}  # the pages' shared script
MODEL_UNAVAILABLE = ("The model is not available right now (it may be starting or stopped). "
                     "Try again in a minute; an administrator can check `appliance status`.")
UNAVAILABLE_STATUSES = (502, 503, 504)  # the gateway: engine unreachable, loading/overloaded, timed out
SESSION_COOKIE = "appliance_session"
OPEN_PATHS = ("/healthz",)  # answered without a session (the runtime's health checks)
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
WITH_BODY = ("POST", "PUT", "PATCH")
SIGN_IN_REQUIRED = "sign in required"
AUTH_UNAVAILABLE = ("Cannot check your sign-in right now (the box's gateway does not answer). Try again in a "
                    "minute; an administrator can check `appliance status`.")
_CURRENT = threading.local()  # the signed-in user of the request this thread is handling
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
        user = current_user()
        if user:  # whom this call is for: the gateway counts usage per user (app keys only)
            req.add_header("X-Appliance-User", user)
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
    def __init__(self, status: int, message: str, reason: str = "", extra: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.extra = extra or {}  # more fields of the JSON answer (login_url)
        self.headers = headers or {}  # more response headers (Location)


def current_user() -> str | None:
    """The name of the user signed in for the request this thread is handling (None outside one)."""
    return getattr(_CURRENT, "user", None)


def accepts(*content_types: str):
    """Mark a route as taking these body types (default: ``application/json`` only)."""

    def mark(fn):
        fn.accepts = tuple(t.lower() for t in content_types)
        return fn

    return mark


def session_token(cookie_header: str | None) -> str | None:
    """The ``appliance_session`` value of a Cookie header (None when absent or oversized)."""
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value and len(value) <= 4096:
            return value.strip('"')
    return None


class Sessions:
    """Who is signed in, asked of the gateway (``GET /auth/session`` with the cookie).

    A yes is remembered for ``ttl_s`` per session (by its SHA-256; at most ``max_entries``), so a
    page's burst of requests costs one call; a no is never remembered (signing in works at once).
    A sign-out or a password change therefore reaches an app within ``ttl_s``.
    """

    def __init__(self, auth_url: str | None = None, *, ttl_s: float = 5.0, max_entries: int = 1024,
                 timeout_s: float = 2.0):
        self.auth_url = base_url(auth_url or os.environ.get("GATEWAY_AUTH_URL")
                                 or os.environ.get("GATEWAY_URL", "http://gateway:8080"))
        self.ttl_s, self.max_entries, self.timeout_s = ttl_s, max_entries, timeout_s
        self.cache: collections.OrderedDict[str, tuple[float, dict]] = collections.OrderedDict()
        self.lock = threading.Lock()

    def user(self, token: str | None) -> dict | None:
        """``{"user", "role"}`` for a session token, None when it is no session; GatewayError 503
        ``auth_unavailable`` when the gateway cannot say."""
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self.lock:
            hit = self.cache.get(digest)
            if hit and hit[0] > now:
                return hit[1]
            self.cache.pop(digest, None)
        info = self._ask(token)
        if info is not None:
            with self.lock:
                self.cache[digest] = (now + self.ttl_s, info)
                while len(self.cache) > self.max_entries:
                    self.cache.popitem(last=False)
        return info

    def _ask(self, token: str) -> dict | None:
        u = urlsplit(self.auth_url)
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = cls(u.hostname, u.port, timeout=self.timeout_s)
        try:
            conn.request("GET", (u.path.rstrip("/") or "") + "/auth/session",
                         headers={"Cookie": f"{SESSION_COOKIE}={token}", "Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read(4096)
        except (OSError, http.client.HTTPException) as exc:
            raise GatewayError(503, AUTH_UNAVAILABLE, "auth_unavailable",
                               f"session check: {type(exc).__name__}") from None
        finally:
            conn.close()
        if resp.status == 401:
            return None
        try:
            info = json.loads(body) if resp.status == 200 else None
        except ValueError:
            info = None
        if not isinstance(info, dict) or not isinstance(info.get("user"), str) or not info["user"]:
            raise GatewayError(503, AUTH_UNAVAILABLE, "auth_unavailable", f"session check: HTTP {resp.status}")
        return {"user": info["user"], "role": str(info.get("role") or "user")}


def _host_origin(scheme: str, host: str) -> tuple[str, str, int] | None:
    try:
        u = urlsplit(f"{scheme}://{host}")
        return scheme, (u.hostname or "").lower(), u.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None


def login_url(public_gateway: str, request_host: str, next_url: str) -> str:
    """The gateway's sign-in page as the browser must reach it: the gateway's scheme and port, the
    host name the browser used for this app (the cookie is set for that name), ``next`` back here."""
    g = urlsplit(base_url(public_gateway))
    try:
        host = urlsplit("//" + request_host).hostname or g.hostname or "127.0.0.1"
    except ValueError:
        host = g.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    port = f":{g.port}" if g.port else ""
    return f"{g.scheme or 'http'}://{host}{port}/auth/login?next={quote(next_url, safe='')}"


def make_handler(routes: dict, static_dir: str, max_body: int = 16 << 20, sessions: Sessions | None = None):
    """A request handler: ``routes[(method, path)](request) -> (status, obj | bytes, content_type)``.

    Before a route runs (and before its body is read): the origin check, the session
    (``request.user``: ``{"user", "role"}``), the body's content type (see the module's docstring).
    """
    sessions = sessions or Sessions()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "appliance-app"
        sys_version = ""
        disable_nagle_algorithm = True

        def log_message(self, format, *args):  # noqa: A002 -- our JSON line replaces it
            pass

        def _reply(self, status: int, payload, ctype: str = "application/json", headers: dict | None = None) -> None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        # ---- who may do what, from the head alone --------------------------------------------
        def own_origin(self) -> str:
            scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
            return f"{scheme}://{self.headers.get('Host', '')}"

        def cross_site(self) -> bool:
            origin = self.headers.get("Origin")
            if origin is not None:
                mine = _host_origin(*self.own_origin().split("://", 1))
                u = urlsplit(origin)
                theirs = _host_origin(u.scheme, u.netloc) if u.scheme in ("http", "https") else None
                return mine is None or theirs != mine
            return self.headers.get("Sec-Fetch-Site", "same-origin") != "same-origin"

        def _sign_in_needed(self, method: str, path: str, query: str) -> HTTPError:
            public = os.environ.get("GATEWAY_PUBLIC_URL") or sessions.auth_url
            here = self.own_origin() + path + (f"?{query}" if query else "")
            is_page = method == "GET" and not path.startswith(("/api/", "/profile/"))
            target = login_url(public, self.headers.get("Host", ""), here if is_page else self.own_origin() + "/")
            if is_page:
                return HTTPError(303, SIGN_IN_REQUIRED, headers={"Location": target})
            return HTTPError(401, SIGN_IN_REQUIRED, "sign_in_required", extra={"login_url": target})

        def _admit(self, method: str, url, fn) -> None:
            """Origin, session and content type; raises HTTPError/GatewayError (body not read)."""
            if method in STATE_CHANGING and self.cross_site():
                raise HTTPError(403, "cross-site request refused: its Origin is not this app's")
            self.user = sessions.user(session_token(self.headers.get("Cookie")))
            if self.user is None:
                raise self._sign_in_needed(method, url.path, url.query)
            _CURRENT.user = self.user["user"]
            if method in WITH_BODY and fn is not None:
                allowed = getattr(fn, "accepts", ("application/json",))
                ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
                if ctype not in allowed:
                    raise HTTPError(415, f"send the body as {' or '.join(allowed)}"
                                         + (f", not {ctype}" if ctype else ""))

        def _route(self, method: str, path: str):
            fn = routes.get((method, path))
            if fn is None:
                prefix = next((p for (m, p) in routes if m == method and p.endswith("/")
                               and path.startswith(p)), None)
                fn = routes.get((method, prefix)) if prefix else None
            return fn

        def _handle(self, method: str) -> None:
            t0 = time.perf_counter()
            url = urlsplit(self.path)
            status = 500
            _CURRENT.user = None
            self.user = None
            try:
                fn = self._route(method, url.path)
                if url.path not in OPEN_PATHS:
                    try:
                        self._admit(method, url, fn)
                    except (HTTPError, GatewayError):
                        self.close_connection = True  # its body was not read: nothing more on this connection
                        raise
                length = int(self.headers.get("Content-Length") or 0)
                if length > max_body:
                    self.close_connection = True
                    raise HTTPError(413, "request too large")
                self.body = self.rfile.read(length) if length else b""
                self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                self.route = url.path
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
                                     **({"detail": detail} if detail else {}), **getattr(exc, "extra", {})},
                            headers=getattr(exc, "headers", None))
                if reason and reason != "sign_in_required":
                    log({"event": reason, "path": url.path, "detail": detail[:300]})
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            except Exception as exc:  # a bug: answer 500, keep serving
                status = 500
                self._reply(500, {"error": f"internal error: {type(exc).__name__}"})
                log({"event": "error", "path": url.path, "error": f"{type(exc).__name__}: {exc}"[:300]})
            finally:
                _CURRENT.user = None
            ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            log({"method": method, "path": url.path, "status": status,
                 "ms": round((time.perf_counter() - t0) * 1000, 1),
                 **({"user": self.user["user"]} if self.user else {}),
                 **({"ctype": ctype[:60]} if method in WITH_BODY and ctype else {})})

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

        def form_files(self) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
            """A ``multipart/form-data`` body: (text fields, [(filename, bytes)] of its file parts)."""
            import email.parser
            import email.policy

            ctype = self.headers.get("Content-Type") or ""
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode("latin-1", "replace") + b"\r\n\r\n" + self.body)
            if not msg.is_multipart():
                raise HTTPError(400, "the body is not multipart/form-data")
            fields, files = {}, []
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                filename = part.get_filename()
                data = part.get_payload(decode=True) or b""
                if filename is not None:
                    files.append((filename, data))
                elif name:
                    fields[str(name)] = data.decode("utf-8", "replace")
            return fields, files

        def do_GET(self):
            self._handle("GET")

        def do_PUT(self):
            self._handle("PUT")

        def do_PATCH(self):
            self._handle("PATCH")

        def do_POST(self):
            self._handle("POST")

        def do_DELETE(self):
            self._handle("DELETE")

    return Handler


def health(_req):
    return 200, {"status": "ok"}, "application/json"


TLS_HANDSHAKE_TIMEOUT_S = 10.0


def tls_context():
    """An SSL context for APP_TLS_CERT / APP_TLS_KEY (set by the runtime when the box serves the LAN
    over HTTPS), or None for plain HTTP."""
    cert, key = os.environ.get("APP_TLS_CERT"), os.environ.get("APP_TLS_KEY")
    if not (cert and key):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class TLSServer(ThreadingHTTPServer):
    """HTTPS with the handshake in the connection's own thread (bounded by a timeout), never in the
    accepting one: a client that opens a connection and stalls holds only its own thread."""

    context: ssl.SSLContext | None = None

    def finish_request(self, request, client_address) -> None:
        request.settimeout(TLS_HANDSHAKE_TIMEOUT_S)
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            request.close()
            return
        request.settimeout(None)
        self.RequestHandlerClass(request, client_address, self)


def serve(app: str, routes: dict, static_dir: str) -> None:
    routes = {("GET", "/healthz"): health, **routes}
    port = int(os.environ.get("PORT", "8080"))
    ctx = tls_context()
    server_class = ThreadingHTTPServer
    if ctx is not None:
        server_class = type("AppTLSServer", (TLSServer,), {"context": ctx})
    server = server_class(("0.0.0.0", port), make_handler(routes, static_dir))
    server.daemon_threads = True
    import signal

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    log({"event": "start", "app": app, "port": port, "tls": ctx is not None,
         "gateway": os.environ.get("GATEWAY_URL", "")})
    server.serve_forever(poll_interval=0.5)
    server.server_close()
