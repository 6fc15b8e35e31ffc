"""appliance gateway: one OpenAI-compatible endpoint in front of the engine services.

Why our own small service: the stack is built offline from a stdlib-only Python runtime
image (nothing can be pulled), and what the box needs -- key verification against
salted hashes written by ``appliance keys``, per-key scopes, expiry, rate and daily token
quotas, usage per key, hot reload of revocations -- is a few hundred lines of stdlib
Python, with no proxy to configure through a side channel. Added latency is measured by
``benchmarks/bench_gateway.py``.

Environment:
  PORT                        listen port (default 8080)
  GATEWAY_CONFIG_DIR          keys.json + routes.json (default /etc/appliance/gateway)
  GATEWAY_USAGE_FILE          where usage counters are flushed (default <config>/usage.json)
  GATEWAY_UPSTREAM_TIMEOUT_S  until an engine's first byte (default 600), then 504 upstream_timeout
  GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S  connecting to an engine (default 10), then 504 upstream_timeout
  GATEWAY_UPSTREAM_IDLE_TIMEOUT_S  between two pieces of an engine's answer (default 120)
  GATEWAY_CLIENT_TIMEOUT_S    per read/write on a client connection (default 30): a half-sent
                              request or an unread answer frees its thread after this
  GATEWAY_MAX_CONNECTIONS     client connections at once (default 2000); one more is closed at once
  GATEWAY_UPSTREAM_API_KEY    optional key sent to the engines (never the caller's key)
  GATEWAY_UPSTREAM_CONCURRENCY  requests in flight to one engine at most (default 16); more wait
  GATEWAY_QUEUE_TIMEOUT_S     how long a request waits for one of those (default 120), then 503 engine_busy
  GATEWAY_MAX_BODY_MIB        largest request body accepted (default 32)
  GATEWAY_POLL_S              config poll interval (default 1.0)

Logs: one JSON line per request on stdout (method, path, status, model, key *name*,
latencies, token counts). Request and response bodies and keys are never logged.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gwcore import Config, Denied, StreamMeter, Usage, Watcher, usage_from_json  # noqa: E402
from oaicheck import Invalid, check, error_body, normalize_error  # noqa: E402

POST_PATHS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/rerank",
              "/v2/rerank", "/v1/score"}
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length", "server", "date"}
_LOG_LOCK = threading.Lock()


def log(record: dict) -> None:
    record = {"ts": round(time.time(), 3), **record}
    line = json.dumps(record, separators=(",", ":")) + "\n"
    with _LOG_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


class Pool:
    """Idle keep-alive connections per upstream, so a request does not pay a TCP handshake, and
    at most ``per_upstream`` requests in flight to one engine: an engine accepts a small number of
    connections at a time (llama.cpp's HTTP threads and listen backlog) and refuses the rest, so a
    burst waits here, in order, instead of failing as 502 (a wait longer than ``queue_timeout_s``
    is answered 503 engine_busy)."""

    def __init__(self, timeout_s: float, max_idle: int = 64, per_upstream: int = 16, queue_timeout_s: float = 120.0,
                 connect_timeout_s: float = 10.0, idle_timeout_s: float = 120.0):
        self.timeout_s = timeout_s                # until the engine's first byte (prefill of a long prompt)
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s      # between two pieces of a response once it started
        self.queue_timeout_s = queue_timeout_s
        self.max_idle = max_idle
        self.per_upstream = per_upstream
        self.idle: dict[str, list[http.client.HTTPConnection]] = {}
        self.lock = threading.Lock()
        self._parsed: dict[str, tuple[str, str, int]] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    def slot(self, base: str) -> threading.BoundedSemaphore:
        with self.lock:
            sem = self._slots.get(base)
            if sem is None:
                sem = self._slots[base] = threading.BoundedSemaphore(self.per_upstream)
            return sem

    def get(self, base: str, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to ``base`` (reused=True), or a new one (always when ``fresh``)."""
        with self.lock:
            stack = self.idle.get(base)
            if stack and not fresh:
                return stack.pop(), True
        parsed = self._parsed.get(base)
        if parsed is None:
            u = urlsplit(base)
            parsed = self._parsed[base] = (u.scheme, u.hostname or "localhost",
                                           u.port or (443 if u.scheme == "https" else 80))
        scheme, host, port = parsed
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        return cls(host, port, timeout=self.connect_timeout_s), False

    def put(self, base: str, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            stack = self.idle.setdefault(base, [])
            if len(stack) < self.max_idle:
                stack.append(conn)
                return
        conn.close()


def _chunk_size(line: bytes) -> int:
    """A chunk-size line: hex digits only (at most 8: a chunk under 4 GiB), extensions ignored.
    Anything else -- a sign, an empty line, garbage -- is a 400: ``int(x, 16)`` would take
    ``-1``, and a negative read size means "read to the end", past every body limit."""
    digits = line.split(b";", 1)[0].strip()
    if not digits or len(digits) > 8 or any(c not in b"0123456789abcdefABCDEF" for c in digits):
        raise Denied(400, "bad_request", "invalid chunk size in a chunked request body")
    return int(digits, 16)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "appliance-gateway"
    sys_version = ""
    disable_nagle_algorithm = True  # TCP_NODELAY on client connections: no 40 ms Nagle/delayed-ACK stalls
    # set by serve()
    config: Config
    usage: Usage
    pool: Pool
    max_body = 32 << 20
    upstream_key = ""
    # per client connection, every read and write (socketserver sets it on the socket): a client
    # that stops sending its request, or stops reading its answer, frees its thread after this
    timeout = 30.0

    # quiet the default stderr access log (it would duplicate ours)
    def log_message(self, format, *args) -> None:  # noqa: A002
        pass

    def log_error(self, format, *args) -> None:  # noqa: A002
        log({"event": "http_error", "detail": (format % args)[:200]})

    # ---- responses ---------------------------------------------------------------------
    def _head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        reason = self.responses.get(status, ("",))[0]
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status: int, body: bytes, ctype: str = "application/json",
              extra: list[tuple[str, str]] | None = None) -> None:
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("X-Request-Id", self.rid)]
        headers += extra or []
        self.wfile.write(self._head(status, headers) + (body if self.command != "HEAD" else b""))
        self.info["status"] = status

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode())

    def _error(self, err: Denied) -> None:
        kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}.get(err.status, "invalid_request_error" if err.status < 500 else "api_error")
        extra = [("Retry-After", str(err.retry_after_s))] if err.retry_after_s else []
        if err.status == 401:
            extra.append(("WWW-Authenticate", 'Bearer realm="appliance"'))
        self._send(err.status, error_body(err.message, kind=kind, code=err.code, param=err.param), extra=extra)
        self.info["error"] = err.code

    # ---- request plumbing --------------------------------------------------------------
    def _presented_key(self) -> str | None:
        auth = self.headers.get("Authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            return value.strip() if scheme.lower() == "bearer" else None
        return self.headers.get("X-Api-Key") or self.headers.get("Api-Key")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts, total = [], 0
            while True:
                size = _chunk_size(self.rfile.readline(1024))
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > self.max_body:
                    self.close_connection = True
                    raise Denied(413, "request_too_large", "request body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(parts)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise Denied(400, "bad_request", "invalid Content-Length") from None
        if length > self.max_body:
            self.close_connection = True
            raise Denied(413, "request_too_large", "request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _begin(self) -> None:
        self.t0 = time.perf_counter()
        self.rid = os.urandom(6).hex()
        self.info = {"rid": self.rid, "method": self.command, "path": self.path.split("?", 1)[0]}

    def _finish(self) -> None:
        self.info["ms"] = round((time.perf_counter() - self.t0) * 1000, 2)
        log(self.info)

    def _auth(self):
        self.config.maybe_reload()
        now = time.time()
        rec = self.config.authenticate(self._presented_key(), now)
        self.info["key"] = rec.name
        return rec, now

    # ---- verbs -------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._begin()
        try:
            path = self.info["path"]
            if path in ("/healthz", "/health"):
                ok = "keys" not in self.config.errors
                self._json(200 if ok else 503, {"status": "ok" if ok else "degraded",
                                                "models": len(self.config.routes), "keys": len(self.config.keys),
                                                "errors": sorted(self.config.errors)})
                return
            rec, now = self._auth()
            if path == "/v1/models" or path.startswith("/v1/models/"):
                visible = sorted(m for m in self.config.routes if rec.allows(m))
                if path == "/v1/models":
                    self._json(200, {"object": "list",
                                     "data": [{"id": m, "object": "model", "created": 0, "owned_by": "appliance"}
                                              for m in visible]})
                    return
                name = path[len("/v1/models/"):]
                if name not in visible:
                    if name in self.config.routes:
                        raise Denied(403, "model_not_allowed", f"this key may not use model {name!r}")
                    raise Denied(404, "model_not_found", f"no model {name!r} on this gateway")
                self._json(200, {"id": name, "object": "model", "created": 0, "owned_by": "appliance"})
                return
            raise Denied(404, "not_found", f"no route for GET {path}")
        except Denied as err:
            self._error(err)
        finally:
            self._finish()

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self._begin()
        try:
            try:
                rec, now = self._auth()  # before reading the body: strangers cannot make us buffer it
                path = self.info["path"]
                if path not in POST_PATHS:
                    raise Denied(404, "not_found", f"no route for POST {path}")
            except Denied:
                self.close_connection = True  # the unread body would corrupt the next request
                raise
            try:
                body = self._read_body()
            except Denied:
                self.close_connection = True  # the rest of a malformed body is not read
                raise
            try:
                req = json.loads(body) if body else None
            except (ValueError, RecursionError):  # RecursionError: a deeply nested body
                req = None
            if not isinstance(req, dict):
                raise Denied(400, "bad_request", "the body must be a JSON object")
            model = req.get("model")
            if not isinstance(model, str) or not model:
                raise Denied(400, "model_required", "the request must name a 'model' (see GET /v1/models)")
            self.info["model"] = model
            if not rec.allows(model):
                self.usage.deny(rec)
                raise Denied(403, "model_not_allowed", f"this key may not use model {model!r}")
            base = self.config.routes.get(model)
            if base is None:
                raise Denied(404, "model_not_found", f"no model {model!r} on this gateway (see GET /v1/models)")
            try:
                check(path, req)  # before the engine sees it: one meaning of "invalid" for every engine
            except Invalid as bad:
                raise Denied(400, bad.code, bad.message, param=bad.param) from None
            self.usage.admit(rec, now)
            self.info["stream"] = req.get("stream") is True
            self._proxy(rec, base, path, body)
        except Denied as err:
            try:
                self._error(err)
            except OSError:
                self._client_left()
        except TimeoutError:  # the client stopped sending its body (or reading the answer)
            self.close_connection = True
            self.info["status"], self.info["error"] = 408, "client_timeout"
        except (BrokenPipeError, ConnectionResetError):
            self._client_left()
        finally:
            self._finish()

    def _client_left(self) -> None:
        """The client went away before its answer was complete: logged as 499 (nginx's "client
        closed request"), never as the status the engine gave."""
        self.close_connection = True
        self.info["status"], self.info["error"] = 499, "client_disconnected"

    # ---- proxying ----------------------------------------------------------------------
    def _proxy(self, rec, base: str, path: str, body: bytes) -> None:
        slot = self.pool.slot(base)
        t_wait = time.perf_counter()
        if not slot.acquire(timeout=self.pool.queue_timeout_s):
            raise Denied(503, "engine_busy", "the engine for this model is busy; retry later", retry_after_s=5)
        try:
            waited_ms = (time.perf_counter() - t_wait) * 1000
            if waited_ms >= 1:
                self.info["queued_ms"] = round(waited_ms, 1)
                if self._client_gone():  # it gave up while queued: the engine must not work for nobody
                    self._client_left()
                    return
            self._proxy_held(rec, base, path, body)
        finally:
            slot.release()

    def _client_gone(self) -> bool:
        """The client closed its connection (readable, and a peek reads end-of-file) while its
        request waited. ``select`` first, never a plain recv: the connection has a timeout, and a
        Python socket with a timeout waits up to it for data before any recv, MSG_DONTWAIT or not."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def _proxy_held(self, rec, base: str, path: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "Accept": self.headers.get("Accept", "*/*"),
                   "X-Request-Id": self.rid}
        if self.upstream_key:
            headers["Authorization"] = f"Bearer {self.upstream_key}"
        t_up = time.perf_counter()
        model = self.info.get("model")
        for attempt in (0, 1):
            conn, reused = self.pool.get(base, fresh=attempt > 0)
            stage = "connect"
            try:
                if conn.sock is None:
                    conn.connect()  # under the connect timeout
                stage = "answer"
                sock = conn.sock  # kept: getresponse() drops conn.sock when the engine closes after it
                sock.settimeout(self.pool.timeout_s)  # then: until the first byte of the answer
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                break
            except TimeoutError:
                conn.close()
                what, limit = (("could not be reached", self.pool.connect_timeout_s) if stage == "connect"
                               else ("did not answer", self.pool.timeout_s))
                raise Denied(504, "upstream_timeout", f"the engine for model {model!r} {what} within {limit:g} s",
                             retry_after_s=5) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                # a pooled connection the engine already closed (keep-alive timeout or its limit of
                # requests per connection): retry once on a NEW connection, never another pooled one
                if reused and attempt == 0:
                    continue
                raise Denied(502, "upstream_unavailable",
                             f"the engine for this model is not reachable ({type(exc).__name__})") from None
        sock.settimeout(self.pool.idle_timeout_s)  # the answer has started: at most this between pieces
        self.info["upstream_status"] = resp.status
        out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP
                       and k.lower() != "x-request-id"]
        ctype = resp.getheader("Content-Type", "")
        length = resp.getheader("Content-Length")
        if length is not None and not resp.chunked and "event-stream" not in ctype:
            try:
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise Denied(504 if isinstance(exc, TimeoutError) else 502,
                             "upstream_timeout" if isinstance(exc, TimeoutError) else "upstream_unavailable",
                             f"the engine for model {model!r} stopped sending its answer "
                             f"({type(exc).__name__})") from None
            self.info["upstream_ms"] = round((time.perf_counter() - t_up) * 1000, 2)
            if resp.will_close:
                conn.close()
            else:
                self.pool.put(base, conn)
            if resp.status == 200 and "json" in ctype:
                prompt, completion = usage_from_json(data)
                self._count(rec, prompt, completion)
            elif resp.status >= 400:  # the engine's refusal, in OpenAI's shape (string code)
                data, ctype = normalize_error(resp.status, data), "application/json"
                self.info["error"] = "upstream_" + str(resp.status)
            self._send(resp.status, data, ctype or "application/json",
                       [(k, v) for k, v in out_headers if k.lower() != "content-type"])
            return
        # streamed (SSE or chunked): pass each piece through as it arrives
        meter = StreamMeter()
        chunked = self.request_version == "HTTP/1.1"  # an HTTP/1.0 client gets a close-delimited body
        if not chunked:
            self.close_connection = True
        head = self._head(resp.status, out_headers + [("X-Request-Id", self.rid)]
                          + ([("Transfer-Encoding", "chunked")] if chunked else []))
        self.info["status"] = resp.status
        sent_head = False
        try:
            while True:
                try:
                    data = resp.read1(65536)
                except (OSError, http.client.HTTPException) as exc:
                    # the engine stalled or broke off: the client's stream ends without its terminator
                    # (so it cannot mistake it for a complete answer); what was generated is charged
                    conn.close()
                    self.close_connection = True
                    self.info["error"] = ("upstream_idle_timeout" if isinstance(exc, TimeoutError)
                                          else "stream_interrupted:" + type(exc).__name__)
                    if not sent_head:
                        self.wfile.write(head)
                    self._count(rec, *meter.result())
                    return
                if not data:
                    break
                meter.feed(data)
                chunk = b"%x\r\n%s\r\n" % (len(data), data) if chunked else data
                if not sent_head:
                    chunk, sent_head = head + chunk, True
                self.wfile.write(chunk)
            self.wfile.write((b"" if sent_head else head) + (b"0\r\n\r\n" if chunked else b""))
        except OSError:
            # the client went away: closing the engine's connection cancels its generation; only
            # what it generated until then is charged
            conn.close()
            self._client_left()
            self._count(rec, *meter.result())
            return
        self.info["upstream_ms"] = round((time.perf_counter() - t_up) * 1000, 2)
        if resp.will_close:
            conn.close()
        else:
            self.pool.put(base, conn)
        self._count(rec, *meter.result())

    def _count(self, rec, prompt: int, completion: int) -> None:
        self.info["prompt_tokens"], self.info["completion_tokens"] = prompt, completion
        self.usage.add_tokens(rec, prompt, completion, time.time())


class Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once: one more is closed at once
    (counted in the log), so a flood cannot exhaust the container's threads and lock out the
    clients already connected; each connection's reads are bounded by ``Handler.timeout``."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    max_connections = 2000

    def __init__(self, *args, **kwargs):
        self._active = 0
        self._active_lock = threading.Lock()
        self.refused = 0
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        with self._active_lock:
            full = self._active >= self.max_connections
            if full:
                self.refused += 1
            else:
                self._active += 1
        if full:
            self.shutdown_request(request)
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                log({"event": "connections_full", "limit": self.max_connections, "refused": self.refused})
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            with self._active_lock:
                self._active -= 1
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active -= 1


def serve() -> None:
    config_dir = os.environ.get("GATEWAY_CONFIG_DIR", "/etc/appliance/gateway")
    port = int(os.environ.get("PORT", "8080"))
    config = Config(config_dir)
    config.reload()
    config.on_change = lambda changes: [log({"event": "reload", "what": c}) for c in changes]
    usage = Usage(os.environ.get("GATEWAY_USAGE_FILE") or os.path.join(config_dir, "usage.json"))
    Handler.config = config
    Handler.usage = usage
    Handler.pool = Pool(float(os.environ.get("GATEWAY_UPSTREAM_TIMEOUT_S", "600")),
                        per_upstream=int(os.environ.get("GATEWAY_UPSTREAM_CONCURRENCY", "16")),
                        queue_timeout_s=float(os.environ.get("GATEWAY_QUEUE_TIMEOUT_S", "120")),
                        connect_timeout_s=float(os.environ.get("GATEWAY_UPSTREAM_CONNECT_TIMEOUT_S", "10")),
                        idle_timeout_s=float(os.environ.get("GATEWAY_UPSTREAM_IDLE_TIMEOUT_S", "120")))
    Handler.timeout = float(os.environ.get("GATEWAY_CLIENT_TIMEOUT_S", "30"))
    Handler.max_body = int(float(os.environ.get("GATEWAY_MAX_BODY_MIB", "32")) * (1 << 20))
    Handler.upstream_key = os.environ.get("GATEWAY_UPSTREAM_API_KEY", "")
    watcher = Watcher(config, usage, log, poll_s=float(os.environ.get("GATEWAY_POLL_S", "1.0")))
    watcher.start()
    Server.max_connections = int(os.environ.get("GATEWAY_MAX_CONNECTIONS", "2000"))
    server = Server(("0.0.0.0", port), Handler)

    def _stop(signum, frame):  # shutdown() blocks until serve_forever returns: call it off-thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log({"event": "start", "port": port, "config_dir": config_dir, "models": sorted(config.routes),
         "keys": len(config.keys), "errors": config.errors})
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        watcher.stop_event.set()
        watcher.join(timeout=5)
        server.server_close()
        log({"event": "stop"})


if __name__ == "__main__":
    serve()
