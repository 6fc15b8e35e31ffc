"""Health probes from outside the container: one bounded HTTP GET of a service's health path.

WHY: a Docker health check runs a program *inside* the container, so it needs one the image
ships. Our images (the pyrt base) ship ``python3``; a vendor engine image may have neither
``python3`` nor ``curl`` (llama.cpp's ``server`` images have curl only). For a service whose
probe is ``http`` the container gets no Docker health check at all, and the runtime (while it
waits for a new container, :mod:`appliance.runtime.converge`) and the node agent (every pass,
:mod:`appliance.agent.loop`) GET the health path at the container's address on the stack
network instead. Healthy means ``200``, as for the in-container checks.

The probe is standard library only and bounded: one deadline (``timeout_s``) covers connecting,
sending and reading; at most :data:`MAX_HEADER_BYTES` of status line and headers are read (the
body is never read), then the connection is closed. It never raises for what the service does:
refused, reset, timed out, garbage and oversized answers are results with a one-line ``detail``.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

MAX_HEADER_BYTES = 16 << 10   # a health answer's status line and headers are a few hundred bytes
_CHUNK = 4096


@dataclass(frozen=True)
class ProbeResult:
    ok: bool                    # answered 200
    status: int | None          # the HTTP status, when there was a well-formed answer
    detail: str                 # one line: "HTTP 200", "HTTP 503", "connection refused", ...
    url: str

    def text(self) -> str:
        """What a failure message or status shows: ``HTTP 503 from http://10.0.0.2:8000/health``."""
        return f"{self.detail} from {self.url}"


def http_probe(host: str, port: int, path: str = "/health", timeout_s: float = 3.0) -> ProbeResult:
    """``GET path`` on ``host:port`` within ``timeout_s`` seconds, all of it."""
    url = f"http://{host}:{port}{path}" if ":" not in host else f"http://[{host}]:{port}{path}"
    deadline = time.monotonic() + max(0.001, float(timeout_s))
    try:
        status = _exchange(host, port, path, deadline)
    except _Bad as exc:
        return ProbeResult(False, None, str(exc), url)
    except (socket.timeout, TimeoutError):
        return ProbeResult(False, None, f"no answer within {timeout_s:g}s", url)
    except ConnectionRefusedError:
        return ProbeResult(False, None, "connection refused", url)
    except ConnectionResetError:
        return ProbeResult(False, None, "connection reset", url)
    except OSError as exc:  # unreachable network/host, no route, name errors
        return ProbeResult(False, None, (exc.strerror or type(exc).__name__).lower(), url)
    return ProbeResult(status == 200, status, f"HTTP {status}", url)


def _exchange(host: str, port: int, path: str, deadline: float) -> int:
    sock = socket.create_connection((host, port), timeout=_left(deadline))
    try:
        sock.settimeout(_left(deadline))
        authority = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: appliance-probe\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1"))
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            if len(head) > MAX_HEADER_BYTES:
                raise _Bad(f"an answer whose headers exceed {MAX_HEADER_BYTES >> 10} KiB")
            sock.settimeout(_left(deadline))
            data = sock.recv(_CHUNK)
            if not data:
                if not head:
                    raise _Bad("the connection closed without an answer")
                break  # closed after the status line/headers: judge what came
            head += data
            if len(head) >= 12 and not head.startswith(b"HTTP/"):
                break  # not HTTP: no point reading on
    finally:
        try:
            sock.close()
        except OSError:
            pass
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise _Bad(f"not an HTTP answer: {line[:40]!r}")
    return int(parts[1])


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


class _Bad(Exception):
    """A malformed or oversized answer (its text is the result's detail)."""


def health_state(ok: bool, age_s: float, start_period_s: float) -> str:
    """Docker's words for a probe result: ``healthy``; a failure within the start period is
    ``starting`` (it does not count, as Docker's start period), after it ``unhealthy``."""
    if ok:
        return "healthy"
    return "starting" if age_s < start_period_s else "unhealthy"
