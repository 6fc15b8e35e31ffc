"""The console's HTTP server (aiohttp): pages, their JSON, and the few changes an admin makes.

Who may see what is decided before any view runs, from the request's head:

* **Signed in**: the gateway's session cookie (``appliance_session``), checked by asking the
  gateway ``GET /auth/session`` (one implementation of sessions for the whole box; a yes is
  remembered 5 s per session). No session: a page answers 303 to the gateway's sign-in page
  with ``next`` back here, the API 401. The gateway cannot say: 503 (closed, never open).
* **Role**: overview, models, training and releases are for ``admin`` (a ``user`` gets 403);
  the keys page shows a user their own keys only.
* **Changes** (POST): the same rules as the apps -- ``Origin`` must be this console's own (or,
  without one, ``Sec-Fetch-Site`` absent or ``same-origin``), else 403; bodies
  ``application/json`` only (415), at most 16 KiB (413), read with a deadline. Revoke and cancel
  are recorded as events with the user's name.

Library calls (status, keys, train) are blocking; they run on one worker thread with one state
connection (status makes its own light read-only Docker client per report, as the CLI does), so
the event loop stays free and the state is used from one thread at a time.
Responses carry a strict Content-Security-Policy (scripts only from here), ``nosniff``, no
referrer, and ``no-store`` for anything with data.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from appliance import __version__
from appliance.console import render, views
from appliance.errors import ApplianceError, UsageError

log = logging.getLogger("appliance.console.server")

SESSION_COOKIE = "appliance_session"
MAX_BODY_BYTES = 16 * 1024
BODY_TIMEOUT_S = 5.0
SESSION_TTL_S = 5.0
SESSION_CACHE_ENTRIES = 1024
AUTH_TIMEOUT_S = 2.0
STATIC_DIR = Path(__file__).with_name("static")
PAGES = {"/": "overview", "/models": "models", "/keys": "keys", "/training": "training", "/releases": "releases"}
CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "style-src 'self' 'unsafe-inline'; font-src 'self'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
# plotly.js sets inline styles on the elements it draws and adds one <style> of its own; scripts
# stay 'self' only.
BASE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


def chart_library() -> Path | None:
    """plotly.js as the ``plotly`` distribution ships it (package data; never a CDN). Found without
    importing plotly (its Python side is not needed)."""
    import importlib.util

    spec = importlib.util.find_spec("plotly")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    return None


@dataclass
class ConsoleConfig:
    auth_url: str                    # the gateway's base URL: sessions are checked and people sign in there
    auth_cafile: str | None = None   # the box's certificate, when the gateway serves HTTPS
    snapshot: str | None = None      # hardware from a node snapshot (tests, support)


def session_token(cookie_header: str | None) -> str | None:
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value and len(value) <= 4096:
            return value.strip('"')
    return None


class Sessions:
    """Who is signed in, asked of the gateway; a yes is cached ``SESSION_TTL_S`` per session."""

    def __init__(self, auth_url: str, cafile: str | None = None):
        self.auth_url = auth_url.rstrip("/").removesuffix("/v1")
        self.ssl = ssl.create_default_context(cafile=cafile) if cafile else None
        self.cache: collections.OrderedDict[str, tuple[float, dict]] = collections.OrderedDict()
        self.client: ClientSession | None = None

    async def user(self, token: str | None) -> dict | None:
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        hit = self.cache.get(digest)
        if hit and hit[0] > now:
            return hit[1]
        self.cache.pop(digest, None)
        if self.client is None:
            self.client = ClientSession(timeout=ClientTimeout(total=AUTH_TIMEOUT_S),
                                        connector=TCPConnector(limit=16, ssl=self.ssl if self.ssl else None))
        try:
            async with self.client.get(f"{self.auth_url}/auth/session", headers={
                    "Cookie": f"{SESSION_COOKIE}={token}", "Accept": "application/json"}) as resp:
                body = await resp.content.read(4096)
                status = resp.status
        except (ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _Unavailable(f"session check: {type(exc).__name__}") from None
        if status == 401:
            return None
        try:
            info = json.loads(body) if status == 200 else None
        except ValueError:
            info = None
        if not isinstance(info, dict) or not isinstance(info.get("user"), str) or not info["user"]:
            raise _Unavailable(f"session check: HTTP {status}")
        who = {"user": info["user"], "role": "admin" if info.get("role") == "admin" else "user"}
        self.cache[digest] = (now + SESSION_TTL_S, who)
        while len(self.cache) > SESSION_CACHE_ENTRIES:
            self.cache.popitem(last=False)
        return who

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


class _Unavailable(Exception):
    pass


def _origin(value: str) -> tuple[str, str, int] | None:
    try:
        u = urlsplit(value)
        port = u.port or {"http": 80, "https": 443}.get(u.scheme)
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname or port is None:
        return None
    return u.scheme, u.hostname.lower(), port


def cross_site(request: web.Request) -> bool:
    """True for a state-changing request another site's page may have sent (as the apps decide)."""
    origin = request.headers.get("Origin")
    if origin is not None:
        mine = _origin(f"{'https' if request.secure else 'http'}://{request.host}")
        return mine is None or _origin(origin) != mine
    return request.headers.get("Sec-Fetch-Site", "same-origin") != "same-origin"


def _json(status: int, obj, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(obj, separators=(",", ":")), content_type="application/json",
                        headers={**BASE_HEADERS, "Cache-Control": "no-store", **(headers or {})})


def _html(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/html",
                        headers={**BASE_HEADERS, "Cache-Control": "no-store"})


class Console:
    """The console's state: the worker thread, its state store, the sessions, the config."""

    def __init__(self, config: ConsoleConfig, store=None):
        self.config = config
        self.sessions = Sessions(config.auth_url, config.auth_cafile)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console")
        self._store = store
        from appliance.console.operations import Operations

        self.operations = Operations()

    # ---- the worker thread's resources ------------------------------------------------------
    def store(self):
        if self._store is None:
            from appliance.state.store import StateStore

            self._store = StateStore.open_default(busy_timeout_s=5.0)
        return self._store

    async def call(self, fn, *args, **kw):
        return await asyncio.get_running_loop().run_in_executor(self.worker, lambda: fn(*args, **kw))

    def view(self, page: str, who: dict, window: str | None):
        store = self.store()
        if page == "overview":
            return views.overview(store, window=window, snapshot=self.config.snapshot)
        if page == "models":
            return views.models_view(store, window=window)
        if page == "keys":
            return views.keys_view(store, who, window=window)
        if page == "training":
            return views.training_view(store, operation=self.operations.snapshot())
        return views.releases_view(store, operation=self.operations.snapshot())

    def close(self) -> None:
        self.worker.shutdown(wait=True)
        self.operations.wait(5.0)

    # ---- gatekeeping ------------------------------------------------------------------------
    def login_redirect(self, request: web.Request) -> web.Response:
        g = urlsplit(self.config.auth_url)
        host = request.url.host or g.hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        here = f"{'https' if request.secure else 'http'}://{request.host}{request.path_qs}"
        location = f"{g.scheme}://{host}{f':{g.port}' if g.port else ''}/auth/login?next={quote(here, safe='')}"
        return web.Response(status=303, headers={**BASE_HEADERS, "Location": location, "Cache-Control": "no-store"})

    async def who(self, request: web.Request) -> dict | None | web.Response:
        try:
            return await self.sessions.user(session_token(request.headers.get("Cookie")))
        except _Unavailable as exc:
            log.warning("sign-in unavailable: %s", exc)
            return _json(503, {"error": "sign-in is unavailable (the gateway did not answer)",
                               "reason": "auth_unavailable"})


async def _read_json(request: web.Request) -> dict:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text='{"error": "send application/json"}', content_type="application/json")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, request.content_length or 0)
    try:
        raw = await asyncio.wait_for(request.content.read(MAX_BODY_BYTES + 1), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout() from None
    if len(raw) > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, len(raw))
    try:
        doc = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(text='{"error": "the body is not JSON"}', content_type="application/json") from None
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(text='{"error": "send a JSON object"}', content_type="application/json")
    return doc


def _int_or_none(doc: dict, field: str) -> int | None:
    value = doc.get(field)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{field} must be a whole number, got {value!r}", where=field, fix="e.g. 60") from None


def make_app(console: Console) -> web.Application:
    """The aiohttp application: ``GET`` pages and ``/api/<page>``, ``POST /api/keys``,
    ``POST /api/keys/{name}/revoke``, ``POST /api/jobs/{id}/cancel``, ``POST /api/releases/rollback``
    (``{"confirm": true}``; 202, progress on the releases page), ``/static/*``, ``/healthz``."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    chart_js = chart_library()

    def guarded(handler, *, page: str | None = None, api: bool = False, change: bool = False):
        async def run(request: web.Request) -> web.StreamResponse:
            if change and cross_site(request):
                return _json(403, {"error": "cross-origin request refused", "reason": "cross_origin"})
            who = await console.who(request)
            if isinstance(who, web.Response):
                return who
            if who is None:
                if api or change:
                    return _json(401, {"error": "sign in required", "reason": "sign_in_required"})
                return console.login_redirect(request)
            if page in views.ADMIN_PAGES and who["role"] != "admin":
                return _json(403, {"error": "administrators only"}) if api else _html(403, render.forbidden(who))
            try:
                return await handler(request, who)
            except ApplianceError as exc:
                status = 400 if isinstance(exc, UsageError) else 500
                return _json(status, {"error": exc.one_line()})
        return run

    def page_handler(name: str):
        async def handler(request: web.Request, who: dict) -> web.StreamResponse:
            view = await console.call(console.view, name, who, request.query.get("window"))
            fragment = request.query.get("fragment") == "1"
            return _html(200, render.page(name, view, who, fragment=fragment, asset_version=__version__))
        return handler

    def api_handler(name: str):
        async def handler(request: web.Request, who: dict) -> web.StreamResponse:
            return _json(200, await console.call(console.view, name, who, request.query.get("window")))
        return handler

    def csv_handler(view, filename: str):
        async def handler(request: web.Request, who: dict) -> web.StreamResponse:
            text = await console.call(view, console.store(), who)
            return web.Response(text=text, content_type="text/csv", headers={
                **BASE_HEADERS, "Cache-Control": "no-store",
                "Content-Disposition": f'attachment; filename="{filename}"'})
        return handler

    async def create_key(request: web.Request, who: dict) -> web.StreamResponse:
        from appliance.gateway.keys import create_key as create

        doc = await _read_json(request)
        models = doc.get("models") or []
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise UsageError("models must be a list of names", where="models", fix='e.g. ["demo-chat"]')
        created = await console.call(create, str(doc.get("name") or ""), models=models,
                                     expires=doc.get("expires") or None, rpm=_int_or_none(doc, "rpm"),
                                     tokens_per_day=_int_or_none(doc, "tokens_per_day"), owner=who["user"],
                                     store=console.store())
        await console.call(console.store().add_event, "console", f"{who['user']} created API key {created.name!r}",
                           service="gateway", data={"user": who["user"], "key": created.name})
        return _json(201, created.model_dump(mode="json"))

    async def revoke_key(request: web.Request, who: dict) -> web.StreamResponse:
        from appliance.gateway.keys import list_keys
        from appliance.gateway.keys import revoke_key as revoke

        name = request.match_info["name"]
        store = console.store()
        if who["role"] != "admin":
            mine = await console.call(lambda: [k.name for k in list_keys(store=store).keys if k.owner == who["user"]])
            if name not in mine:
                return _json(403, {"error": "you may revoke only your own keys"})
        info = await console.call(revoke, name, store=store)
        await console.call(store.add_event, "console", f"{who['user']} revoked API key {name!r}", service="gateway",
                           data={"user": who["user"], "key": name})
        return _json(200, info.model_dump(mode="json"))

    async def cancel_job(request: web.Request, who: dict) -> web.StreamResponse:
        from appliance.train.jobs import cancel_job as cancel

        job_id = request.match_info["job"]
        job = await console.call(lambda: cancel(job_id, store=console.store()))
        await console.call(console.store().add_event, "console", f"{who['user']} cancelled training job {job_id}",
                           service=None, data={"user": who["user"], "job": job_id})
        return _json(200, job.model_dump(mode="json"))

    def event_recorder(store):
        def record(message: str, data: dict) -> None:  # from the operation's thread: a connection of its own
            from appliance.state.store import StateStore

            own = StateStore(store.path, busy_timeout_s=5.0)
            try:
                own.add_event("console", message, data=data)
            finally:
                own.close()
        return record

    async def rollback(request: web.Request, who: dict) -> web.StreamResponse:
        from appliance.console.operations import Busy

        doc = await _read_json(request)
        if doc.get("confirm") is not True:
            raise UsageError("a rollback must be confirmed", where="confirm", fix='send {"confirm": true}')
        store = console.store()
        await console.call(store.add_event, "console", f"{who['user']} started a rollback", service=None,
                           data={"user": who["user"]})
        try:
            return _json(202, console.operations.start_rollback(who["user"], record_event=event_recorder(store)))
        except Busy as exc:
            return _json(409, {"error": str(exc)})

    async def serve_job(request: web.Request, who: dict) -> web.StreamResponse:
        """Serve a finished job's model beside what runs (``appliance serve JOB``); refused here,
        before anything starts, unless the job completed and its output is registered."""
        from appliance.console.operations import Busy

        job_id = request.match_info["job"]
        doc = await _read_json(request)
        if doc.get("confirm") is not True:
            raise UsageError("serving a job must be confirmed", where="confirm", fix='send {"confirm": true}')
        store = console.store()
        await console.call(views.servable_job, store, job_id)
        await console.call(store.add_event, "console", f"{who['user']} started serving job {job_id}",
                           service=None, data={"user": who["user"], "job": job_id})
        try:
            return _json(202, console.operations.start_serve(who["user"], job_id,
                                                             record_event=event_recorder(store)))
        except Busy as exc:
            return _json(409, {"error": str(exc)})

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        files = {n: STATIC_DIR / n for n in ("console.js", "console.css", "favicon.svg")}
        if chart_js is not None:
            files["plotly.min.js"] = chart_js
        path = files.get(name)
        if path is None:
            return _json(404, {"error": "not found"})
        return web.FileResponse(path, headers={**BASE_HEADERS, "Cache-Control": "public, max-age=86400"})

    async def healthz(_request: web.Request) -> web.Response:
        return _json(200, {"ok": True})

    for path, name in PAGES.items():
        app.router.add_get(path, guarded(page_handler(name), page=name))
        app.router.add_get(f"/api/{name}", guarded(api_handler(name), page=name, api=True))
    app.router.add_get("/api/keys.csv", guarded(csv_handler(views.csv_usage, "usage.csv"), page="keys", api=True))
    app.router.add_get("/api/usage-daily.csv", guarded(csv_handler(views.csv_daily, "usage-daily.csv"), page="keys",
                                                       api=True))
    app.router.add_post("/api/keys", guarded(create_key, page="keys", api=True, change=True))
    app.router.add_post("/api/keys/{name}/revoke", guarded(revoke_key, page="keys", api=True, change=True))
    app.router.add_post("/api/jobs/{job}/cancel", guarded(cancel_job, page="training", api=True, change=True))
    app.router.add_post("/api/jobs/{job}/serve", guarded(serve_job, page="training", api=True, change=True))
    app.router.add_post("/api/releases/rollback", guarded(rollback, page="releases", api=True, change=True))
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/healthz", healthz)

    async def on_cleanup(_app) -> None:
        await console.sessions.close()

    app.on_cleanup.append(on_cleanup)
    return app


def serve(console: Console, *, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
          ready=None) -> None:
    """Serve until SIGINT/SIGTERM. ``ready(url)`` is called once listening (tests, the CLI)."""

    async def main() -> None:
        runner = web.AppRunner(make_app(console), access_log=None, handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=128)
        await site.start()
        shown = f"[{host}]" if ":" in host else host
        url = f"{'https' if ssl_context else 'http'}://{shown}:{port}/"
        log.info("console at %s", url)
        if ready is not None:
            ready(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        console.close()
