"""appliance gateway: one OpenAI-compatible endpoint in front of the engine services.

Why our own service on aiohttp: the box is built offline (nothing can be pulled), and what it
needs -- key verification against salted hashes written by ``appliance keys``, per-key scopes,
expiry, rate and daily token quotas, usage per key and per signed-in user, hot reload of
revocations, the box's sign-in -- is a few hundred lines on a well-kept asynchronous HTTP stack
(server and engine client in one library, its HTTP parser in C), carried into the image as
installed wheels (``packages.txt``). An asyncio server holds a slow or idle connection for a
few KiB instead of a thread, so half-sent requests cannot starve the clients behind them.
Added latency and throughput are measured by ``benchmarks/bench_gateway.py``.

Environment:
  PORT                        listen port (default 8080)
  GATEWAY_CONFIG_DIR          keys.json, routes.json, upstream_keys.json, the users' files
                              (default /etc/appliance/gateway)
  GATEWAY_USAGE_FILE          where usage counters are flushed (default <config>/usage.json)
  GATEWAY_UPSTREAM_TIMEOUT_S  until an engine's first byte (default 600), then 504 upstream_timeout
  GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S  connecting to an engine (default 10), then 504 upstream_timeout
  GATEWAY_UPSTREAM_IDLE_TIMEOUT_S  between two pieces of an engine's answer (default 120)
  GATEWAY_CLIENT_TIMEOUT_S    a request head must be complete within it (also: an idle keep-alive
                              connection is closed after it), and each read of a body or write of
                              an answer must progress within it (default 30): then 408 / closed
  GATEWAY_BODY_TIMEOUT_S      a whole request body (default 120)
  GATEWAY_MAX_CONNECTIONS     client connections at once (default 2000)
  GATEWAY_MAX_CONNECTIONS_PER_ADDRESS  from one client address (default 256); at either cap the
                              oldest connection without a request in flight is closed (conns.py)
  GATEWAY_UPSTREAM_API_KEY    optional key sent to engines without their own secret
                              (upstream_keys.json); never the caller's key
  GATEWAY_UPSTREAM_CONCURRENCY  requests in flight to one engine at most (default 16); more wait
  GATEWAY_QUEUE_TIMEOUT_S     how long a request waits for one of those (default 120), then 503 engine_busy
  GATEWAY_MAX_BODY_MIB        largest request body accepted (default 32), enforced while it streams in
  GATEWAY_MAX_JSON_DEPTH      deepest nesting of a request's JSON (default 32)
  GATEWAY_TLS_CERT / GATEWAY_TLS_KEY  PEM files: serve HTTPS instead of HTTP on PORT
  GATEWAY_INTERNAL_PORT       with TLS: also plain HTTP on this port, for the apps on the stack's
                              own network (the runtime never publishes it)
  GATEWAY_POLL_S              config poll interval (default 1.0)

Logs: one JSON line per request on stdout (method, path, status, model, key *name*, user,
latencies, token counts). Request and response bodies, keys and secrets are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aiohttp import web  # noqa: E402
from aiohttp.http_exceptions import HttpProcessingError  # noqa: E402
from aiohttp.web_protocol import RequestPayloadError  # noqa: E402
from conns import ConnectionGuard  # noqa: E402
from gwcore import Config, Denied, StreamMeter, Usage, Watcher, usage_from_json  # noqa: E402
from oaicheck import Invalid, check, error_body, normalize_error  # noqa: E402
from relay import Broken, Upstreams  # noqa: E402

POST_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/rerank",
              "/v2/rerank", "/v1/score")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length", "server", "date", "x-request-id"}
USER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
SERVER = "appliance-gateway"
ERROR_KINDS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
               429: "rate_limit_error"}
WRITE_BUFFER_BYTES = 64 << 10   # an answer larger than this is written under the client timeout
REPLICA_DOWN_S = 10.0          # a replica that refused a connection is tried last for this long


class JsonLog:
    """One JSON line per record on stdout (the container's log), written in batches.

    Why batches: under load a write per request to the container's log pipe costs a system call
    here and a wake-up of Docker's log shim for every line, on the same two cores as the engines.
    Lines logged on the event loop are written together when the loop has run the callbacks that
    are ready (``call_soon``): one write for all the requests that finished in one pass of the
    loop, and no delay when it is quiet (a line is out before the next poll). Lines from another
    thread (the config watcher), and every line before the loop runs or after it stops, are
    written at once."""

    def __init__(self, max_lines: int = 256):
        self.max_lines = max_lines
        self.lines: list[str] = []
        self.loop = None
        self.scheduled = False
        self.lock = threading.Lock()

    def __call__(self, record: dict) -> None:
        line = json.dumps({"ts": round(time.time(), 3), **record}, separators=(",", ":")) + "\n"
        loop = self.loop
        if loop is None or threading.get_ident() != self.loop_thread:
            with self.lock:
                self.lines.append(line)
            self.flush()
            return
        self.lines.append(line)
        if len(self.lines) >= self.max_lines:
            self.flush()
        elif not self.scheduled:
            self.scheduled = True
            loop.call_soon(self.flush)

    def start(self, loop) -> None:
        self.loop, self.loop_thread = loop, threading.get_ident()

    def stop(self) -> None:
        self.loop = None
        self.flush()

    def flush(self) -> None:
        with self.lock:
            self.scheduled = False
            lines, self.lines = self.lines, []
        if lines:
            sys.stdout.write("".join(lines))
            sys.stdout.flush()


log = JsonLog()


class _AiohttpLog(logging.Handler):
    """aiohttp's own log records (a malformed request it refused, a handler error) as one JSON
    line each, without a traceback: what was wrong, never the request's content."""

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        detail = f"{record.getMessage()}: {type(exc).__name__}" if exc else record.getMessage()
        log({"event": "http_error", "detail": detail[:200]})


def json_depth_ok(value, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` deep (iterative: a bomb cannot blow the stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return True


class Gateway:
    """The request handlers and what they share (config, usage, engines, limits)."""

    def __init__(self, config: Config, usage: Usage, upstreams: Upstreams, guard: ConnectionGuard, *,
                 max_body: int, client_timeout_s: float, body_timeout_s: float, max_json_depth: int,
                 upstream_key: str = ""):
        self.config, self.usage, self.upstreams, self.guard = config, usage, upstreams, guard
        self.max_body = max_body
        self.client_timeout_s = client_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_json_depth = max_json_depth
        self.upstream_key = upstream_key
        self.turns: dict[str, int] = {}         # model -> the replica that took its last request
        self.down_until: dict[str, float] = {}  # engine URL -> until when it counts as gone

    # ---- around every request ----------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler):
        """Marks the connection busy (never shed while a request runs) and logs the request."""
        proto = request.protocol
        self.guard.request_started(proto, request)
        info = {"rid": os.urandom(6).hex(), "method": request.method, "path": request.path}
        request["info"] = info
        t0 = time.perf_counter()
        try:
            return await handler(request)
        except Denied as err:
            return self.error(request, err)
        except asyncio.CancelledError:  # the client left: aiohttp cancels its handler
            info["status"], info["error"] = 499, "client_disconnected"
            raise
        finally:
            self.guard.request_done(proto)
            info["ms"] = round((time.perf_counter() - t0) * 1000, 2)
            if "status" not in info:
                info["status"] = 500
            log(info)

    def respond(self, request: web.Request, status: int, body: bytes, ctype: str = "application/json",
                headers: list[tuple[str, str]] | None = None, close: bool = False) -> web.Response:
        info = request["info"]
        resp = web.Response(status=status, body=body if request.method != "HEAD" else None,
                            headers={"Content-Type": ctype, "X-Request-Id": info["rid"], "Server": SERVER})
        if request.method == "HEAD":
            resp.content_length = len(body)
        for k, v in headers or []:
            resp.headers.add(k, v)
        if close:
            resp.force_close()
        info["status"] = status
        return resp

    def json(self, request: web.Request, status: int, obj) -> web.Response:
        return self.respond(request, status, json.dumps(obj, separators=(",", ":")).encode())

    def error(self, request: web.Request, err: Denied) -> web.Response:
        kind = ERROR_KINDS.get(err.status, "invalid_request_error" if err.status < 500 else "api_error")
        extra = [("Retry-After", str(err.retry_after_s))] if err.retry_after_s else []
        if err.status == 401:
            extra.append(("WWW-Authenticate", 'Bearer realm="appliance"'))
        request["info"]["error"] = err.code
        # a refused body that was not read to its end would be taken for the next request
        close = err.status in (400, 408, 413) or not request.content.at_eof()
        return self.respond(request, err.status, error_body(err.message, kind=kind, code=err.code, param=err.param),
                            headers=extra, close=close)

    def authenticate(self, request: web.Request):
        self.config.maybe_reload()
        auth = request.headers.get("Authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            presented = value.strip() if scheme.lower() == "bearer" else None
        else:
            presented = request.headers.get("X-Api-Key") or request.headers.get("Api-Key")
        now = time.time()
        rec = self.config.authenticate(presented, now)
        info = request["info"]
        info["key"] = rec.name
        user = request.headers.get("X-Appliance-User") if rec.acts_for_users else None
        if user is not None and not USER_RE.match(user):
            user = None
        if user:
            info["user"] = user
        return rec, user, now

    # ---- GET ---------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        ok = "keys" not in self.config.errors
        return self.json(request, 200 if ok else 503,
                         {"status": "ok" if ok else "degraded", "models": len(self.config.routes),
                          "keys": len(self.config.keys), "errors": sorted(self.config.errors),
                          "connections": self.guard.snapshot()})

    async def models(self, request: web.Request) -> web.Response:
        rec, _, _ = self.authenticate(request)
        visible = sorted(m for m in self.config.routes if rec.allows(m))
        name = request.match_info.get("name")
        if name is None:
            return self.json(request, 200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "appliance"} for m in visible]})
        if name not in visible:
            if name in self.config.routes:
                raise Denied(403, "model_not_allowed", f"this key may not use model {name!r}")
            raise Denied(404, "model_not_found", f"no model {name!r} on this gateway")
        return self.json(request, 200, {"id": name, "object": "model", "created": 0, "owned_by": "appliance"})

    async def not_found(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            self.authenticate(request)  # strangers learn nothing about paths
        raise Denied(404, "not_found", f"no route for {request.method} {request.path}")

    # ---- POST --------------------------------------------------------------------------------
    async def read_body(self, request: web.Request) -> bytes:
        """The request body, refused as soon as it passes ``max_body`` (Content-Length or counted
        while a chunked body streams in) or stalls: 413 / 408, and the connection is closed."""
        if request.content_length is not None and request.content_length > self.max_body:
            raise Denied(413, "request_too_large", "request body too large")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        parts, total = [], 0
        first = request.content.read_nowait()  # a small body has usually arrived with the head
        if request.content.at_eof():
            if len(first) > self.max_body:
                raise Denied(413, "request_too_large", "request body too large")
            return first
        if first:
            parts.append(first)
            total = len(first)
        try:
            async with asyncio.timeout(None) as cm:
                while True:
                    cm.reschedule(min(deadline, loop.time() + self.client_timeout_s))
                    chunk = await request.content.readany()
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > self.max_body:
                        raise Denied(413, "request_too_large", "request body too large")
                    parts.append(chunk)
        except TimeoutError:
            request.content.feed_eof()  # no lingering read of a body that does not come: closed after the 408
            raise Denied(408, "client_timeout", "the request body did not arrive in time") from None
        except (HttpProcessingError, RequestPayloadError, ValueError) as exc:  # a chunk size of -1, a short body
            request.content.feed_eof()  # nothing more is read from it (aiohttp would drain it after the answer)
            raise Denied(400, "bad_request", f"invalid request body ({getattr(exc, 'message', None) or exc})"
                         .replace("\n", " ")[:200]) from None
        return b"".join(parts)

    async def post(self, request: web.Request) -> web.StreamResponse:
        # who, which endpoint and how often are decided from the head: strangers cannot make the
        # gateway read (let alone buffer) a body, and a key over its rate spends nothing more
        rec, user, now = self.authenticate(request)
        self.usage.admit(rec, now)
        body = await self.read_body(request)
        try:
            req = json.loads(body) if body else None
        except (ValueError, RecursionError):  # RecursionError: a body nested past Python's limit
            req = None
        if not isinstance(req, dict):
            raise Denied(400, "bad_request", "the body must be a JSON object")
        if not json_depth_ok(req, self.max_json_depth):
            raise Denied(400, "bad_request", f"the body nests deeper than {self.max_json_depth} levels")
        model = req.get("model")
        if not isinstance(model, str) or not model:
            raise Denied(400, "model_required", "the request must name a 'model' (see GET /v1/models)")
        info = request["info"]
        info["model"] = model
        if not rec.allows(model):
            self.usage.deny(rec)
            raise Denied(403, "model_not_allowed", f"this key may not use model {model!r}")
        route = self.config.routes.get(model)
        if route is None:
            raise Denied(404, "model_not_found", f"no model {model!r} on this gateway (see GET /v1/models)")
        try:
            check(request.path, req)  # before the engine sees it: one meaning of "invalid" for every engine
        except Invalid as bad:
            raise Denied(400, bad.code, bad.message, param=bad.param) from None
        info["stream"] = req.get("stream") is True
        self.usage.served(rec, now, user, model)
        headers = {"Content-Type": "application/json", "Accept": request.headers.get("Accept", "*/*"),
                   "X-Request-Id": info["rid"]}
        engines = self.replica_order(model, route)
        for i, engine in enumerate(engines):
            secret = self.config.upstream_key(engine, self.upstream_key)
            sent = dict(headers, Authorization=f"Bearer {secret}") if secret else headers
            try:
                async with self.upstreams.turn(engine.upstream, info):
                    return await self.proxy(request, rec, user, engine.upstream, body, sent, model)
            except Denied as exc:
                if i == len(engines) - 1 or not getattr(exc, "unreached", False):
                    raise
                self.down_until[engine.upstream] = time.monotonic() + REPLICA_DOWN_S
                info["failover"] = info.get("failover", 0) + 1
        raise Denied(502, "upstream_unavailable", "no engine of this model is reachable")  # not reached

    def replica_order(self, model: str, route) -> tuple:
        """The model's engines in the order to try: round robin over the replicas, those that
        refused a connection in the last REPLICA_DOWN_S seconds last (a node that went away is
        drained, and tried again once it may be back)."""
        engines = route.all()
        if len(engines) == 1:
            return engines
        turn = self.turns[model] = (self.turns.get(model, -1) + 1) % len(engines)
        ring = engines[turn:] + engines[:turn]
        now = time.monotonic()
        return tuple(sorted(ring, key=lambda e: self.down_until.get(e.upstream, 0.0) > now))

    async def proxy(self, request, rec, user, base: str, body: bytes, headers: dict, model: str):
        info = request["info"]
        t_up = time.perf_counter()
        async with self.upstreams.post(base, request.path, body, headers, model) as resp:
            info["upstream_status"] = resp.status
            out_headers = [(k, v) for k, v in resp.headers if k.lower() not in HOP_BY_HOP]
            ctype = resp.content_type
            if resp.content_length is not None and "event-stream" not in ctype:
                try:
                    data = await resp.read_all()
                except Broken as exc:
                    raise Denied(504 if exc.timeout else 502, "upstream_timeout" if exc.timeout
                                 else "upstream_unavailable",
                                 f"the engine for model {model!r} stopped sending its answer ({exc})") from None
                info["upstream_ms"] = round((time.perf_counter() - t_up) * 1000, 2)
                if resp.status == 200 and "json" in ctype:
                    self.count(info, rec, user, *usage_from_json(data))
                elif resp.status >= 400:  # the engine's refusal, in OpenAI's shape (string code)
                    data, ctype = normalize_error(resp.status, data), "application/json"
                    info["error"] = "upstream_" + str(resp.status)
                extra = [(k, v) for k, v in out_headers if k.lower() != "content-type"]
                if len(data) <= WRITE_BUFFER_BYTES:
                    return self.respond(request, resp.status, data, ctype or "application/json", extra)
                return await self.send_large(request, resp.status, data, ctype or "application/json", extra)
            return await self.stream(request, resp, rec, user, out_headers, t_up)

    async def send_large(self, request, status: int, data: bytes, ctype: str, extra) -> web.StreamResponse:
        """A large answer written under the client timeout (a client that stops reading cannot
        pin the connection and its buffer forever)."""
        info = request["info"]
        out = web.StreamResponse(status=status, headers={"Content-Type": ctype, "X-Request-Id": info["rid"],
                                                         "Server": SERVER})
        for k, v in extra:
            out.headers.add(k, v)
        out.content_length = len(data)
        info["status"] = status
        try:
            async with asyncio.timeout(self.client_timeout_s * 4):
                await out.prepare(request)
                if request.method != "HEAD":
                    await out.write(data)
                await out.write_eof()
        except (TimeoutError, ConnectionError):
            info["status"], info["error"] = 499, "client_timeout"
            request.transport and request.transport.close()
        return out

    async def stream(self, request, resp, rec, user, out_headers, t_up: float) -> web.StreamResponse:
        """Each piece of a streamed (SSE or chunked) answer passed on as it arrives; ``write``
        waits while the client's buffer is full (backpressure reaches the engine through TCP)."""
        info = request["info"]
        meter = StreamMeter()
        out = web.StreamResponse(status=resp.status)
        for k, v in out_headers:
            out.headers.add(k, v)
        out.headers["X-Request-Id"] = info["rid"]
        out.headers["Server"] = SERVER
        info["status"] = resp.status
        try:
            await out.prepare(request)
            while True:
                try:
                    data = await resp.next_piece()
                except Broken as exc:
                    # the client's stream ends without its terminator (it cannot mistake it for a
                    # complete answer); what was generated is charged
                    info["error"] = "upstream_idle_timeout" if exc.timeout else f"stream_interrupted:{exc}"
                    if request.transport is not None:
                        request.transport.close()
                    return out
                if not data:
                    break
                meter.feed(data)
                async with asyncio.timeout(self.client_timeout_s):
                    await out.write(data)
            async with asyncio.timeout(self.client_timeout_s):
                await out.write_eof()
            info["upstream_ms"] = round((time.perf_counter() - t_up) * 1000, 2)
        except (ConnectionError, TimeoutError):
            # the client went away (or stopped reading): leaving closes the engine's connection,
            # which cancels its generation; only what it generated until then is charged
            info["status"], info["error"] = 499, "client_disconnected"
            if request.transport is not None:
                request.transport.close()
        finally:
            self.count(info, rec, user, *meter.result())
        return out

    def count(self, info: dict, rec, user, prompt: int, completion: int) -> None:
        info["prompt_tokens"], info["completion_tokens"] = prompt, completion
        self.usage.add_tokens(rec, prompt, completion, time.time(), user, info.get("model"))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def tls_context():
    """An SSL context for GATEWAY_TLS_CERT/GATEWAY_TLS_KEY (TLS 1.2+), or None for plain HTTP."""
    cert, key = os.environ.get("GATEWAY_TLS_CERT"), os.environ.get("GATEWAY_TLS_KEY")
    if not (cert and key):
        return None
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def build_app(config_dir: str, gw: Gateway) -> web.Application:
    app = web.Application(client_max_size=gw.max_body, middlewares=[gw.middleware])
    add = app.router.add_route
    for path in ("/healthz", "/health"):
        add("GET", path, gw.health)
    add("GET", "/v1/models", gw.models)
    add("GET", "/v1/models/{name:.+}", gw.models)
    for path in POST_PATHS:
        add("POST", path, gw.post)
    auth_module = os.path.join(os.path.dirname(os.path.abspath(__file__)), "authweb.py")
    if os.path.exists(auth_module):  # the box's sign-in (users and sessions)
        import authweb

        authweb.install(app, config_dir, log)
    add("*", "/{tail:.*}", gw.not_found)
    return app


async def serve() -> None:
    config_dir = os.environ.get("GATEWAY_CONFIG_DIR", "/etc/appliance/gateway")
    port = int(os.environ.get("PORT", "8080"))
    config = Config(config_dir)
    config.reload()
    config.on_change = lambda changes: [log({"event": "reload", "what": c}) for c in changes]
    usage = Usage(os.environ.get("GATEWAY_USAGE_FILE") or os.path.join(config_dir, "usage.json"))
    upstreams = Upstreams(first_byte_timeout_s=env_float("GATEWAY_UPSTREAM_TIMEOUT_S", 600),
                          connect_timeout_s=env_float("GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S", 10),
                          idle_timeout_s=env_float("GATEWAY_UPSTREAM_IDLE_TIMEOUT_S", 120),
                          per_upstream=int(env_float("GATEWAY_UPSTREAM_CONCURRENCY", 16)),
                          queue_timeout_s=env_float("GATEWAY_QUEUE_TIMEOUT_S", 120))
    await upstreams.start()
    client_timeout_s = env_float("GATEWAY_CLIENT_TIMEOUT_S", 30)
    guard = ConnectionGuard(int(env_float("GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", 256)),
                            int(env_float("GATEWAY_MAX_CONNECTIONS", 2000)), log)
    gw = Gateway(config, usage, upstreams, guard,
                 max_body=int(env_float("GATEWAY_MAX_BODY_MIB", 32) * (1 << 20)),
                 client_timeout_s=client_timeout_s, body_timeout_s=env_float("GATEWAY_BODY_TIMEOUT_S", 120),
                 max_json_depth=int(env_float("GATEWAY_MAX_JSON_DEPTH", 32)),
                 upstream_key=os.environ.get("GATEWAY_UPSTREAM_API_KEY", ""))
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [_AiohttpLog()]
        logger.propagate = False
    app = build_app(config_dir, gw)
    # keepalive_timeout doubles as the header timeout: aiohttp closes a connection whose request
    # head is not complete when it fires (a half-sent request), and an idle keep-alive one
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, keepalive_timeout=client_timeout_s,
                           max_line_size=8190, max_field_size=8190, shutdown_timeout=5.0)
    await runner.setup()
    guard.attach(runner.server)
    tls = tls_context()
    site = web.TCPSite(runner, "0.0.0.0", port, backlog=1024, reuse_address=True, ssl_context=tls)
    await site.start()
    internal = os.environ.get("GATEWAY_INTERNAL_PORT")
    if tls is not None and internal:  # plain HTTP for the apps beside it on the stack network (never published)
        await web.TCPSite(runner, "0.0.0.0", int(internal), backlog=1024, reuse_address=True).start()
    watcher = Watcher(config, usage, log, poll_s=env_float("GATEWAY_POLL_S", 1.0))
    watcher.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log.start(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log({"event": "start", "port": port, "tls": tls is not None, "internal_port": internal if tls else None,
         "config_dir": config_dir, "models": sorted(config.routes), "keys": len(config.keys), "errors": config.errors})
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await upstreams.close()
        watcher.stop_event.set()
        await asyncio.to_thread(watcher.join, 5)
        log.stop()
        log({"event": "stop"})


def run() -> None:
    """The event loop: uvloop's (libuv) where the image carries it -- a cheaper loop for a server
    that does little but move bytes -- else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
        return
    uvloop.run(serve())


if __name__ == "__main__":
    run()
