"""The gateway's side toward the engines: pooled connections, a queue per engine, and timeouts.

aiohttp's client keeps keep-alive connections per engine (no TCP handshake per request) and
reads answers as they arrive. What it does not decide is what the gateway owes its callers:

* at most ``per_upstream`` requests in flight to one engine (an engine accepts few connections at
  a time -- llama.cpp's HTTP threads and listen backlog -- and refuses the rest), the others wait
  here in order; a wait longer than ``queue_timeout_s`` is ``503 engine_busy``;
* three timeouts, each with its own answer: connecting (``connect_timeout_s``) and the first byte
  of the answer (``first_byte_timeout_s``: a long prompt's prefill) are ``504 upstream_timeout``
  naming the model; once an answer has started, ``idle_timeout_s`` between two pieces ends a
  stream unterminated (the caller cannot take it for a complete answer);
* a caller that leaves cancels its handler (aiohttp's handler cancellation): leaving the
  ``async with`` of the engine's response closes that connection, which is how an engine learns
  to stop generating.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import aiohttp
from gwcore import Denied


class Upstreams:
    def __init__(self, *, first_byte_timeout_s: float, connect_timeout_s: float, idle_timeout_s: float,
                 per_upstream: int, queue_timeout_s: float, max_idle: int = 64):
        self.first_byte_timeout_s = first_byte_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.per_upstream = per_upstream
        self.queue_timeout_s = queue_timeout_s
        self.max_idle = max_idle
        self.session: aiohttp.ClientSession | None = None
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30.0, ttl_dns_cache=10,
                                         force_close=False, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s),
            skip_auto_headers=("User-Agent", "Accept-Encoding"))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _slot(self, base: str) -> asyncio.Semaphore:
        sem = self._slots.get(base)
        if sem is None:
            sem = self._slots[base] = asyncio.Semaphore(self.per_upstream)
        return sem

    @asynccontextmanager
    async def turn(self, base: str, info: dict):
        """Wait for one of the engine's ``per_upstream`` places (503 engine_busy after the queue timeout)."""
        sem = self._slot(base)
        if sem.locked():
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            try:
                async with asyncio.timeout(self.queue_timeout_s):
                    await sem.acquire()
            except TimeoutError:
                raise Denied(503, "engine_busy", "the engine for this model is busy; retry later",
                             retry_after_s=5) from None
            info["queued_ms"] = round((loop.time() - t0) * 1000, 1)
        else:
            await sem.acquire()
        try:
            yield
        finally:
            sem.release()

    @asynccontextmanager
    async def post(self, base: str, path: str, body: bytes, headers: dict, model: str):
        """The engine's response to ``POST base+path`` (its head read), as an ``async with``.

        A pooled connection the engine had already closed (its keep-alive timeout, or its limit of
        requests per connection) fails before any answer: that is retried once."""
        url = base + path
        for attempt in (0, 1):
            try:
                # connecting is bounded by the session's sock_connect (ConnectionTimeoutError)
                async with asyncio.timeout(self.connect_timeout_s + self.first_byte_timeout_s):
                    resp = await self.session.post(url, data=body, headers=headers, allow_redirects=False)
                break
            except (aiohttp.ConnectionTimeoutError, TimeoutError) as exc:
                what, limit = (("could not be reached", self.connect_timeout_s)
                               if isinstance(exc, aiohttp.ConnectionTimeoutError)
                               else ("did not answer", self.first_byte_timeout_s))
                raise Denied(504, "upstream_timeout", f"the engine for model {model!r} {what} within {limit:g} s",
                             retry_after_s=5) from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == 0 and not isinstance(exc, aiohttp.ClientConnectorError):
                    continue
                raise Denied(502, "upstream_unavailable",
                             f"the engine for this model is not reachable ({type(exc).__name__})") from None
            except aiohttp.ClientError as exc:
                raise Denied(502, "upstream_unavailable",
                             f"the engine for this model is not reachable ({type(exc).__name__})") from None
        try:
            yield resp
        finally:
            resp.release()

    async def read_all(self, resp, model: str) -> bytes:
        """A whole (Content-Length) answer; an engine that stops sending it is 504/502."""
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                return await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            timeout = isinstance(exc, TimeoutError)
            raise Denied(504 if timeout else 502, "upstream_timeout" if timeout else "upstream_unavailable",
                         f"the engine for model {model!r} stopped sending its answer ({type(exc).__name__})") from None
