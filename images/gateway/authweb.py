"""The HTTP side of sign-in, as aiohttp routes the gateway mounts: ``install(app, config_dir, log)``.

One login for the whole box: the gateway signs people in and sets the ``appliance_session``
cookie; the apps (other ports of the same host: cookies are per host, not per port) send it back
to ``GET /auth/session`` to learn who is signed in. The decisions are auth.py's; this module is
HTTP only.

Routes (docs/users.md has the full contract):

* ``GET /auth/login`` -- the sign-in form (login.html); with ``?token=``: redeem a one-time link,
  set the cookie, 303 to ``next`` (same host only) or ``/auth/``;
* ``POST /auth/login`` -- ``{"name", "password"}`` as JSON (200 ``{"user", "role"}``) or
  form-urlencoded (303 to ``next``), with the cookie; 401 wrong name or password, 429 throttled;
* ``GET /auth/session`` -- 200 ``{"user", "role"}`` for the cookie, else 401;
* ``POST /auth/logout`` -- ends the session (refused from then on) and clears the cookie;
* ``GET /auth/`` -- "signed in as ...", with a sign-out button.

Every state-changing request whose ``Origin`` is not this origin (or, without one, whose
``Sec-Fetch-Site`` is not ``same-origin``) is 403. Sign-in bodies are at most 16 KiB and read
within 10 s. argon2 and file writes run in a small thread pool (4 threads: argon2's 64 MiB per
check stays bounded), never on the event loop. Logs: ``{"event": "sign_in", "method",
"outcome", "user" (known names only), "client"}``; never a password or a token.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # auth.py lies beside this file (main.py puts this directory on the path too)
    sys.path.insert(0, HERE)
from auth import Auth, Throttled  # noqa: E402

COOKIE = "appliance_session"
MAX_BODY = 16 * 1024
BODY_TIMEOUT_S = 10.0
LOGIN_PATH, HOME_PATH = "/auth/login", "/auth/"
AUTH_KEY = web.AppKey("appliance_auth", Auth)
HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                               "frame-ancestors 'none'",
    # same-origin, not no-referrer: under no-referrer a browser sends the form's POST with "Origin: null"
    "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
HOME_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Signed in</title><link rel="icon" href="data:,">
<style>body{{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1f2430}}
main{{max-width:420px;margin:12vh auto;background:#fff;border-radius:10px;padding:24px 28px}}
button{{padding:8px 14px;border:0;border-radius:6px;background:#374151;color:#fff;cursor:pointer}}</style>
</head><body><main><h1>Signed in</h1>
<p id="who" data-user="{user}" data-role="{role}">Signed in as <strong>{user}</strong> ({role}).</p>
<p>The box's apps know you now; open them from the links you were given.</p>
<form method="post" action="/auth/logout"><button type="submit" id="logout">Sign out</button></form>
</main></body></html>
"""


def _origin(value: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or base URL; None when it is not one."""
    try:
        u = urlsplit(value)
        port = u.port or {"http": 80, "https": 443}.get(u.scheme)
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname or port is None:
        return None
    return u.scheme, u.hostname.lower(), port


def own_origin(request: web.Request) -> str:
    return f"{'https' if request.secure else 'http'}://{request.host}"


def cross_site(request: web.Request) -> bool:
    """True for a state-changing request that another site's page may have sent."""
    origin = request.headers.get("Origin")
    if origin is not None:
        mine = _origin(own_origin(request))
        return mine is None or _origin(origin) != mine
    return request.headers.get("Sec-Fetch-Site", "same-origin") != "same-origin"


def safe_next(request: web.Request, target: str | None) -> str:
    """``target`` when it stays on this host (a path here, or any port of the same host name: the
    apps), else ``/auth/``: a sign-in never redirects to another site."""
    if not target or len(target) > 2048 or any(ord(c) < 0x21 or c == "\\" for c in target):
        return HOME_PATH
    if target.startswith("/") and not target.startswith("//"):
        return target
    mine = _origin(own_origin(request))
    try:
        u = urlsplit(target)
    except ValueError:
        return HOME_PATH
    if mine and u.scheme in ("http", "https") and (u.hostname or "").lower() == mine[1] and not u.username \
            and not u.password:
        return target
    return HOME_PATH


def _redirect(location: str) -> web.Response:
    """303 See Other: after a sign-in or sign-out the browser GETs ``location``."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store",
                                             "Referrer-Policy": "no-referrer"})


def _json(status: int, obj: dict, headers: dict | None = None) -> web.Response:
    return web.json_response(obj, status=status, headers={**JSON_HEADERS, **(headers or {})})


def _refuse(request: web.Request, status: int, message: str) -> web.Response:
    """A refusal before the body was read: the connection closes after it (an unread body would
    be taken for the next request)."""
    resp = _json(status, {"error": message})
    if not request.content.at_eof():
        resp.force_close()
    return resp


def _set_session(resp: web.StreamResponse, request: web.Request, token: str, ttl_s: float) -> None:
    resp.set_cookie(COOKIE, token, max_age=int(ttl_s), path="/", httponly=True, samesite="Strict",
                    secure=True if request.secure else None)


def _clear_session(resp: web.StreamResponse, request: web.Request) -> None:
    resp.set_cookie(COOKIE, "", max_age=0, expires="Thu, 01 Jan 1970 00:00:00 GMT", path="/", httponly=True,
                    samesite="Strict", secure=True if request.secure else None)


async def _read_body(request: web.Request) -> bytes:
    """The body, at most MAX_BODY bytes (chunked too), within BODY_TIMEOUT_S; else an HTTP error."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)

    async def read() -> bytes:
        data = bytearray()
        async for chunk in request.content.iter_chunked(4096):
            data += chunk
            if len(data) > MAX_BODY:
                raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(data))
        return bytes(data)

    try:
        return await asyncio.wait_for(read(), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout() from None


def install(app: web.Application, config_dir: str, log, *, auth: Auth | None = None,
            workers: int = 4) -> None:
    """Add the ``/auth/*`` routes to ``app`` (before it starts). ``log(record: dict)`` is the
    gateway's JSON-line logger. ``auth``: an :class:`auth.Auth` to use (tests), else one on
    ``config_dir``."""
    auth = auth or Auth(config_dir)
    app[AUTH_KEY] = auth
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="auth")
    with open(os.path.join(HERE, "login.html"), encoding="utf-8") as fh:
        login_template = fh.read()

    async def close_pool(_app) -> None:
        pool.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(close_pool)

    async def blocking(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def login_page(status: int, request: web.Request, *, message: str = "", target: str | None = None,
                   headers: dict | None = None) -> web.Response:
        text = login_template.replace("{{next}}", html.escape(target or "", quote=True)).replace(
            "{{message}}", f'<p class="message" id="message" role="alert">{html.escape(message)}</p>'
            if message else "")
        return web.Response(status=status, text=text, content_type="text/html", charset="utf-8",
                            headers={**HTML_HEADERS, **(headers or {})})

    def signed_in(request: web.Request) -> dict | None:
        token = request.cookies.get(COOKIE, "")
        return auth.session(token) if token else None

    def record(request: web.Request, method: str, outcome: str, user: str | None) -> None:
        known = user if user and auth.user(user) is not None else None
        log({"event": "sign_in", "method": method, "outcome": outcome, "user": known, "client": request.remote})

    async def get_login(request: web.Request) -> web.StreamResponse:
        target = request.query.get("next")
        token = request.query.get("token")
        if token is None:
            return login_page(200, request, target=target)
        if not auth.ready:
            return login_page(503, request, message="Sign-in is not set up on this box yet: an administrator runs "
                                                    "`appliance init`.", target=target)
        try:
            result = await blocking(auth.redeem_link, token, request.remote)
        except Throttled as exc:
            record(request, "link", "throttled", None)
            return login_page(429, request, message=f"Too many failed attempts. Try again in {exc.retry_after_s} s.",
                              target=target, headers={"Retry-After": str(exc.retry_after_s)})
        if result is None:
            record(request, "link", "refused", None)
            return login_page(401, request, target=target,
                              message="This sign-in link does not work any more: it was used, it expired (links "
                                      "last 10 minutes) or it was never valid. Ask an administrator for a new one, "
                                      "or sign in with your password.")
        session_token, user = result
        record(request, "link", "ok", user)
        resp = _redirect(safe_next(request, target))
        _set_session(resp, request, session_token, auth.session_ttl_s)
        return resp

    async def post_login(request: web.Request) -> web.StreamResponse:
        if cross_site(request):
            return _refuse(request, 403, "cross-site sign-in refused: the request's Origin is not this box's")
        ctype = request.content_type
        if ctype not in ("application/json", "application/x-www-form-urlencoded"):
            return _refuse(request, 415, 'send application/json {"name", "password"} or a form '
                                         "(application/x-www-form-urlencoded)")
        body = await _read_body(request)
        is_form = ctype != "application/json"
        if is_form:
            try:
                fields = {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), max_num_fields=10).items()}
            except (UnicodeDecodeError, ValueError):
                return login_page(400, request, message="The form could not be read.")
        else:
            try:
                fields = json.loads(body or b"null")
            except ValueError:
                fields = None
            if not isinstance(fields, dict):
                return _json(400, {"error": 'send {"name": "...", "password": "..."}'})
        name, password, target = fields.get("name"), fields.get("password"), fields.get("next")
        if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
            if is_form:
                return login_page(400, request, message="Enter your name and password.",
                                  target=target if isinstance(target, str) else None)
            return _json(400, {"error": 'send {"name": "...", "password": "..."}'})
        target = target if isinstance(target, str) else None
        if not auth.ready:
            return _json(503, {"error": "sign-in is not set up on this box yet (an administrator runs appliance "
                                        "init)"})
        try:
            token = await blocking(auth.login_password, name, password, request.remote)
        except Throttled as exc:
            record(request, "password", "throttled", name)
            headers = {"Retry-After": str(exc.retry_after_s)}
            message = f"Too many failed sign-ins. Try again in {exc.retry_after_s} s."
            if is_form:
                return login_page(429, request, message=message, target=target, headers=headers)
            return _json(429, {"error": message}, headers)
        if token is None:
            record(request, "password", "refused", name)
            if is_form:
                return login_page(401, request, message="Wrong name or password.", target=target)
            return _json(401, {"error": "wrong name or password"})
        record(request, "password", "ok", name)
        info = auth.session(token)
        if is_form:
            resp = _redirect(safe_next(request, target))
        else:
            resp = _json(200, {"user": info["user"], "role": info["role"]})
        _set_session(resp, request, token, auth.session_ttl_s)
        return resp

    async def get_session(request: web.Request) -> web.Response:
        info = signed_in(request)
        if info is None:
            return _json(401, {"error": "sign in required", "login_url": LOGIN_PATH})
        return _json(200, {"user": info["user"], "role": info["role"]})

    async def post_logout(request: web.Request) -> web.StreamResponse:
        if cross_site(request):
            return _refuse(request, 403, "cross-site sign-out refused: the request's Origin is not this box's")
        token = request.cookies.get(COOKIE, "")
        info = auth.session(token) if token else None
        if info is not None:
            await blocking(auth.logout, token)
            log({"event": "sign_out", "user": info["user"], "client": request.remote})
        wants_json = request.content_type == "application/json" or (
            "application/json" in request.headers.get("Accept", "") and "text/html" not in
            request.headers.get("Accept", ""))
        resp = _json(200, {"signed_out": True}) if wants_json else _redirect(LOGIN_PATH)
        _clear_session(resp, request)
        return resp

    async def get_home(request: web.Request) -> web.StreamResponse:
        info = signed_in(request)
        if info is None:
            return _redirect(LOGIN_PATH)
        text = HOME_PAGE.format(user=html.escape(info["user"]), role=html.escape(info["role"]))
        return web.Response(text=text, content_type="text/html", charset="utf-8", headers=HTML_HEADERS)

    async def get_auth(_request: web.Request) -> web.StreamResponse:
        return _redirect(HOME_PATH)

    def answered(handler):
        """The handler's answer, with aiohttp's HTTP errors (413, 408) as JSON answers; the status is
        put in the gateway's request record (``request["info"]``, main.py's log line) when there is one."""

        async def run(request: web.Request) -> web.StreamResponse:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                resp = _json(exc.status, {"error": exc.reason})
                if not request.content.at_eof():
                    resp.force_close()  # an unread body would be taken for the next request
            info = request.get("info")
            if isinstance(info, dict):
                info["status"] = resp.status
            return resp

        return run

    app.router.add_get(LOGIN_PATH, answered(get_login))
    app.router.add_post(LOGIN_PATH, answered(post_login))
    app.router.add_get("/auth/session", answered(get_session))
    app.router.add_post("/auth/logout", answered(post_logout))
    app.router.add_get(HOME_PATH, answered(get_home))
    app.router.add_get("/auth", answered(get_auth))
