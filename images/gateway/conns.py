"""Client connections: a cap per client address and in all, the idle ones shed first.

Why here and not in aiohttp: aiohttp bounds a request's line and header sizes and closes a
connection whose request head is not complete within its keep-alive timeout (which the gateway
sets to its client timeout), but it accepts any number of connections. A flood of connections
that send half a request costs an asyncio server little (no thread each), yet each holds a file
descriptor and a few KiB until its timeout; so the gateway keeps at most ``per_address`` from
one client address and ``total`` in all.

At a cap the newcomer is not simply refused: that would let a flood of half-sent requests from
one address (or, through Docker's port forwarding, from every local client, which all arrive
from the bridge's address) lock out the legitimate clients behind it. Instead the oldest
connection that is not serving a request is closed -- one that never completed a request first
(a half-sent request, a connection opened and left), then an idle keep-alive one -- and only
when every connection in the pool has a request in flight is the newcomer closed. A request in
progress is never cut.
"""

from __future__ import annotations

from collections import OrderedDict

try:  # internals of aiohttp's RequestHandler, see ConnectionGuard._watch_body_errors
    from aiohttp.web_protocol import RequestPayloadError as _RequestPayloadError
    from aiohttp.web_protocol import _ErrInfo
except ImportError:  # pragma: no cover - another aiohttp layout: the body timeout still applies
    _ErrInfo = _RequestPayloadError = None

FRESH, BUSY, IDLE = 0, 1, 2  # no request yet / a request in flight / served, waiting for the next


class ConnectionGuard:
    """Tracks every client connection of one aiohttp server (``attach``) and its state
    (``request_started`` / ``request_done``, called around each request by the middleware)."""

    def __init__(self, per_address: int, total: int, log):
        self.per_address = per_address
        self.total = total
        self.log = log
        self.state: OrderedDict = OrderedDict()       # handler -> FRESH/BUSY/IDLE, oldest first
        self.by_address: dict[str, OrderedDict] = {}  # address -> handlers (ordered, values unused)
        self.address: dict = {}                       # handler -> address
        self._requests: dict = {}                     # handler -> the request it is serving
        self.evicted = 0
        self.refused = 0

    def attach(self, server) -> None:
        """Hook the aiohttp ``web.Server`` (the protocol factory): its ``connection_made`` and
        ``connection_lost`` are called by every connection's handler."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler, transport):
            made(handler, transport)
            self._opened(handler, transport)

        def connection_lost(handler, exc=None):
            self._closed(handler)
            lost(handler, exc)

        server.connection_made = connection_made
        server.connection_lost = connection_lost

    # ---- events ------------------------------------------------------------------------------
    def _watch_body_errors(self, handler, transport) -> None:
        """Make a malformed request body fail the read that waits for it.

        aiohttp's C parser (llhttp), on an invalid chunk size that arrives after the request head
        (``-1``, ``zz``), queues a 400 for "the next message" but leaves the current request's
        body open, so the handler reading it would wait for its timeout; aiohttp's Python parser
        fails that read at once. This wrapper does the same for the C parser: after each piece
        of data, a queued parse error is set on the body of the request in progress. It relies on
        two internals of aiohttp's RequestHandler (``_messages``, ``_ErrInfo``); without them the
        gateway still refuses such a body, after the client timeout (408). The wrapper is put
        between the transport and the handler with asyncio's public ``set_protocol``."""
        messages = getattr(handler, "_messages", None)
        if messages is None or _ErrInfo is None or not hasattr(transport, "set_protocol"):
            return
        transport.set_protocol(_BodyErrorWatch(handler, messages, self._requests))

    def _opened(self, handler, transport) -> None:
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else "?"
        self.state[handler] = FRESH
        self.address[handler] = address
        self._watch_body_errors(handler, transport)
        pool = self.by_address.setdefault(address, OrderedDict())
        pool[handler] = None
        if len(pool) > self.per_address:
            self._shed(pool, handler, "per_address")
        if handler in self.state and len(self.state) > self.total:
            self._shed(self.state, handler, "total")

    def _closed(self, handler) -> None:
        self.state.pop(handler, None)
        self._requests.pop(handler, None)
        address = self.address.pop(handler, None)
        pool = self.by_address.get(address)
        if pool is not None:
            pool.pop(handler, None)
            if not pool:
                del self.by_address[address]

    def request_started(self, handler, request=None) -> None:
        if handler in self.state:
            self.state[handler] = BUSY
            self._requests[handler] = request

    def request_done(self, handler) -> None:
        if handler in self.state:
            self.state[handler] = IDLE
            self._requests.pop(handler, None)

    # ---- shedding ----------------------------------------------------------------------------
    def _victim(self, pool, newcomer):
        """The oldest FRESH connection of ``pool`` other than the newcomer, else the oldest IDLE."""
        idle = None
        for handler in pool:
            if handler is newcomer:
                continue
            st = self.state.get(handler)
            if st == FRESH:
                return handler
            if st == IDLE and idle is None:
                idle = handler
        return idle

    def _shed(self, pool, newcomer, limit: str) -> None:
        victim = self._victim(pool, newcomer)
        if victim is None:  # every other connection is serving a request: the newcomer waits its turn elsewhere
            victim = newcomer
            self.refused += 1
            count, event = self.refused, "connections_full"
        else:
            self.evicted += 1
            count, event = self.evicted, "connection_shed"
        self._closed(victim)
        victim.force_close()
        if count in (1, 10, 100) or count % 1000 == 0:
            self.log({"event": event, "limit": limit, "per_address": self.per_address, "total": self.total,
                      "count": count})

    def snapshot(self) -> dict:
        """Counts for /healthz: connections now, shed and refused since start."""
        busy = sum(1 for st in self.state.values() if st == BUSY)
        return {"open": len(self.state), "busy": busy, "shed": self.evicted, "refused": self.refused}


class _BodyErrorWatch:
    """The protocol the transport calls: the handler's, plus the check of
    :meth:`ConnectionGuard._watch_body_errors` after each piece of data."""

    __slots__ = ("handler", "messages", "requests")

    def __init__(self, handler, messages, requests: dict):
        self.handler, self.messages, self.requests = handler, messages, requests

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)
        messages = self.messages
        if messages and isinstance(messages[-1][0], _ErrInfo):
            request = self.requests.get(self.handler)
            if request is not None and not request.content.at_eof():
                message = getattr(messages[-1][0], "message", None) or "invalid request body"
                request.content.set_exception(_RequestPayloadError(message))

    def eof_received(self):
        return self.handler.eof_received()

    def connection_lost(self, exc) -> None:
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_made(self, transport) -> None:  # pragma: no cover - set after the connection is made
        self.handler.connection_made(transport)
