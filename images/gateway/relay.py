"""The gateway's side toward the engines: pooled keep-alive connections, a queue per engine, timeouts.

Why a small HTTP/1.1 client of our own here, while the side facing clients is aiohttp's server:
the engine hop is one narrow, internal conversation -- a POST of a body the gateway already
checked, to an engine on the stack's internal network, answered with a Content-Length, chunked
or close-delimited body -- and it is on the path of every request. aiohttp's client spent
~430 µs of CPU per request on this 2-core machine (request and response objects, URL and header
multidicts, tracing hooks), a plain asyncio stream ~165 µs: the difference is most of the
gateway's added latency budget (``benchmarks/bench_gateway.py``). Everything it reads is
bounded: the response head (64 KiB, 100 header lines), chunk-size lines (strict hex, 8 digits),
a whole answer (``MAX_ANSWER_BYTES``).

What the gateway owes its callers is decided here too:

* at most ``per_upstream`` requests in flight to one engine (an engine accepts few connections at
  a time -- llama.cpp's HTTP threads and listen backlog -- and refuses the rest), the others wait
  here in order; a wait longer than ``queue_timeout_s`` is ``503 engine_busy``;
* connecting (``connect_timeout_s``) and the first byte of the answer (``first_byte_timeout_s``:
  a long prompt's prefill) each end in ``504 upstream_timeout`` naming the model; once an answer
  has started, more than ``idle_timeout_s`` between two pieces ends it (:class:`Broken`);
* a caller that leaves cancels its handler (aiohttp's handler cancellation): leaving the
  ``async with`` of an unfinished answer closes the engine's connection, which is how an engine
  learns to stop generating.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from gwcore import Denied

HEAD_LIMIT_BYTES = 64 << 10
MAX_HEADER_LINES = 100
MAX_ANSWER_BYTES = 256 << 20      # a whole (Content-Length) answer; streams are passed on, not kept
PIECE_BYTES = 64 << 10
HEX = frozenset(b"0123456789abcdefABCDEF")


class Broken(Exception):
    """An answer that stopped before its end: ``timeout`` when the engine went quiet."""

    def __init__(self, reason: str, timeout: bool = False):
        super().__init__(reason)
        self.timeout = timeout


class _Conn:
    __slots__ = ("reader", "writer", "reused")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer, self.reused = reader, writer, False

    def close(self) -> None:
        self.writer.close()


class Answer:
    """An engine's answer: status and headers read; the body read with :meth:`read_all` or
    piece by piece with :meth:`next_piece` (chunked encoding removed)."""

    def __init__(self, conn: _Conn, status: int, headers: list[tuple[str, str]], idle_timeout_s: float):
        self.conn = conn
        self.status = status
        self.headers = headers
        self.idle_timeout_s = idle_timeout_s
        lower = {k.lower(): v for k, v in headers}
        self.content_type = lower.get("content-type", "")
        self.chunked = "chunked" in lower.get("transfer-encoding", "").lower()
        length = lower.get("content-length")
        self.content_length = int(length) if length is not None and length.strip().isdigit() and \
            not self.chunked else None
        self.will_close = "close" in lower.get("connection", "").lower()
        self._left = self.content_length        # bytes of the body (or of the current chunk) still to read
        self._in_chunk = False
        self.done = status in (204, 304) or self.content_length == 0

    async def read_all(self) -> bytes:
        """A whole answer with a Content-Length (at most MAX_ANSWER_BYTES), within the idle timeout."""
        if self.content_length > MAX_ANSWER_BYTES:
            raise Broken(f"answer of {self.content_length} bytes is larger than the gateway relays whole")
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                data = await self.conn.reader.readexactly(self.content_length)
        except TimeoutError:
            raise Broken("TimeoutError", timeout=True) from None
        except (asyncio.IncompleteReadError, OSError) as exc:
            raise Broken(type(exc).__name__) from None
        self.done = True
        return data

    async def next_piece(self) -> bytes:
        """The next piece of the body as it arrives (b"" at its end); :class:`Broken` when the
        engine goes quiet for ``idle_timeout_s`` or the body is malformed or cut short."""
        if self.done:
            return b""
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                return await self._piece()
        except TimeoutError:
            raise Broken("TimeoutError", timeout=True) from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as exc:
            raise Broken(type(exc).__name__) from None

    async def _piece(self) -> bytes:
        reader = self.conn.reader
        if self.chunked:
            if not self._in_chunk:
                line = await reader.readuntil(b"\r\n")
                digits = line[:-2].split(b";", 1)[0].strip()
                if not digits or len(digits) > 8 or not HEX.issuperset(digits):
                    raise ValueError("invalid chunk size from the engine")
                size = int(digits, 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, ignored
                        pass
                    self.done = True
                    return b""
                self._left, self._in_chunk = size, True
            data = await reader.read(min(self._left, PIECE_BYTES))
            if not data:
                raise asyncio.IncompleteReadError(b"", self._left)
            self._left -= len(data)
            if self._left == 0:
                if await reader.readexactly(2) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                self._in_chunk = False
            return data
        if self._left is not None:  # Content-Length
            data = await reader.read(min(self._left, PIECE_BYTES))
            if not data:
                raise asyncio.IncompleteReadError(b"", self._left)
            self._left -= len(data)
            self.done = self._left == 0
            return data
        data = await reader.read(PIECE_BYTES)  # close-delimited
        if not data:
            self.done, self.will_close = True, True
        return data


def _parse_head(head: bytes) -> tuple[int, list[tuple[str, str]], bool]:
    """(status, headers, HTTP/1.0) from a response head; ValueError when it is not HTTP."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    if len(lines) > MAX_HEADER_LINES + 1:
        raise ValueError("too many header lines")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("not an HTTP/1.x answer")
    status = int(rest[:3])
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError("malformed header line")
        headers.append((name, value.strip()))
    return status, headers, version == "HTTP/1.0"


def _unreached(denied: Denied) -> Denied:
    """Mark a refusal that happened before any byte went to the engine: another replica of the
    model may take the request (nothing was sent, so nothing can run twice)."""
    denied.unreached = True
    return denied


class Upstreams:
    def __init__(self, *, first_byte_timeout_s: float, connect_timeout_s: float, idle_timeout_s: float,
                 per_upstream: int, queue_timeout_s: float, max_idle: int = 64):
        self.first_byte_timeout_s = first_byte_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.per_upstream = per_upstream
        self.queue_timeout_s = queue_timeout_s
        self.max_idle = max_idle
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._idle: dict[str, list[_Conn]] = {}
        self._where: dict[str, tuple[str, int, bytes]] = {}

    async def start(self) -> None:
        """Nothing to open ahead: connections are made on first use and kept."""

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

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

    def _target(self, base: str) -> tuple[str, int, bytes]:
        hit = self._where.get(base)
        if hit is None:
            u = urlsplit(base)
            if u.scheme != "http" or not u.hostname:
                raise Denied(502, "upstream_unavailable", "the engine's address is not an http:// URL")
            port = u.port or 80
            hit = self._where[base] = (u.hostname, port, f"Host: {u.hostname}:{port}\r\n".encode("latin-1"))
        return hit

    async def _connection(self, base: str, fresh: bool, model: str) -> _Conn:
        idle = self._idle.get(base)
        while idle and not fresh:
            conn = idle.pop()
            if not conn.writer.is_closing() and not conn.reader.at_eof():
                conn.reused = True
                return conn
            conn.close()
        host, port, _ = self._target(base)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(host, port, limit=HEAD_LIMIT_BYTES)
        except TimeoutError:
            raise _unreached(Denied(504, "upstream_timeout", f"the engine for model {model!r} could not be "
                                    f"reached within {self.connect_timeout_s:g} s", retry_after_s=5)) from None
        except OSError as exc:
            raise _unreached(Denied(502, "upstream_unavailable",
                                    f"the engine for this model is not reachable ({type(exc).__name__})")) from None
        return _Conn(reader, writer)

    def _keep(self, base: str, conn: _Conn) -> None:
        idle = self._idle.setdefault(base, [])
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.close()

    @asynccontextmanager
    async def post(self, base: str, path: str, body: bytes, headers: dict, model: str):
        """The engine's :class:`Answer` to ``POST base+path`` (its head read), as an ``async with``;
        the connection goes back to the pool when the answer was read to its end, else is closed.

        A pooled connection the engine had already closed (its keep-alive timeout, or its limit of
        requests per connection) fails before any byte of an answer: that is retried once, on a
        new connection."""
        _, _, host_line = self._target(base)
        head = (f"POST {path} HTTP/1.1\r\n".encode("latin-1") + host_line
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
                + b"Content-Length: %d\r\n\r\n" % len(body))
        for attempt in (0, 1):
            conn = await self._connection(base, attempt > 0, model)
            try:
                conn.writer.write(head + body)
                async with asyncio.timeout(self.first_byte_timeout_s):
                    raw = await conn.reader.readuntil(b"\r\n\r\n")
                status, hdrs, http10 = _parse_head(raw)
                break
            except TimeoutError:
                conn.close()
                raise Denied(504, "upstream_timeout", f"the engine for model {model!r} did not answer within "
                             f"{self.first_byte_timeout_s:g} s", retry_after_s=5) from None
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                conn.close()
                partial = getattr(exc, "partial", b"")
                if conn.reused and attempt == 0 and not partial:
                    continue
                raise Denied(502, "upstream_unavailable",
                             f"the engine for this model is not reachable ({type(exc).__name__})") from None
            except (asyncio.LimitOverrunError, ValueError, OSError) as exc:
                conn.close()
                raise Denied(502, "upstream_unavailable",
                             f"the engine for this model gave no valid answer ({type(exc).__name__})") from None
            except BaseException:
                conn.close()
                raise
        answer = Answer(conn, status, hdrs, self.idle_timeout_s)
        if http10:
            answer.will_close = True
        try:
            yield answer
        finally:
            if answer.done and not answer.will_close:
                self._keep(base, conn)
            else:
                conn.close()
