"""A light read-only Docker Engine API client (standard library only), for ``appliance status``.

Split from :mod:`appliance.runtime.docker_adapter` (which re-exports :class:`EngineReader` and
:func:`read_client`, the names callers use): it is a client of its own -- one keep-alive
socket, bounded reads -- and shares with the adapter only the row conversion and its errors.
"""

from __future__ import annotations

import time

from appliance.errors import DockerUnavailable, RuntimeFailure
from appliance.runtime import docker_adapter
from appliance.runtime.docker_adapter import (
    DEFAULT_TIMEOUT_S,
    ContainerInfo,
    Docker,
    _short,
    containers_from_rows,
    docker_host,
)

_READ_MAX_LINE = 64 << 10
_READ_MAX_HEADERS = 100
_UNREACHABLE_FIX = "start it (systemctl start docker) or set DOCKER_HOST"


class EngineReader:
    """A read-only Docker Engine API client over the engine's unix socket, standard library only.

    WHY beside :class:`Docker` rather than through the SDK: ``appliance status`` makes one list
    call and at most a few inspects, and importing the SDK (docker -> requests -> urllib3, even
    ``http.client`` -> email, ssl) costs more than everything else status does. It offers the
    same surface for those calls -- :meth:`list_containers` (the same rows turned into the same
    :class:`ContainerInfo` by :func:`containers_from_rows`), :meth:`inspect_container` (None when
    gone), ``api_calls``, ``server_header``, :meth:`close` -- and the same typed errors:
    :class:`DockerUnavailable` when the engine cannot be reached or stops answering,
    :class:`RuntimeFailure` when it answers with an error.

    Only ``GET``, HTTP/1.1 on one keep-alive connection. Each request has one deadline
    (``timeout_s``, connecting included) and each response at most
    :data:`appliance.runtime.docker_adapter.READ_MAX_RESPONSE_BYTES`. Paths carry no API version:
    the engine serves unversioned paths at its own current version, which is what the SDK's
    version negotiation picks.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, host: str | None = None):
        self.host = host or docker_host()
        if not self.host.startswith("unix://"):
            raise ValueError(f"EngineReader needs a unix:// DOCKER_HOST, not {self.host!r} (use Docker)")
        self.path = self.host[len("unix://"):] or "/var/run/docker.sock"
        self.timeout_s = float(timeout_s)
        self.api_calls = 0                      # HTTP requests answered by the engine
        self.server_header: str | None = None   # e.g. "Docker/24.0.7 (linux)"
        self._sock = None
        self._file = None

    # ---- the calls -----------------------------------------------------------------------------
    def list_containers(self, label_filters: list[str], *, all: bool = True) -> list[ContainerInfo]:
        """One API call: every container matching all ``label_filters`` ("k=v" or "k")."""
        import json
        from urllib.parse import quote

        query = ("all=1&" if all else "") + "filters=" + quote(json.dumps({"label": list(label_filters)}))
        status, body = self._get(f"/containers/json?{query}", "listing containers")
        if status != 200:
            raise self._refused("listing containers", status, body)
        rows = self._json(body, "listing containers")
        if not isinstance(rows, list):
            raise RuntimeFailure("listing containers failed: the engine did not answer with a list", where="docker",
                                 fix="check the engine's log (journalctl -u docker) and re-run")
        return containers_from_rows(rows)

    def inspect_container(self, ref: str) -> dict | None:
        from urllib.parse import quote

        what = f"inspecting container {ref[:12]}"
        status, body = self._get(f"/containers/{quote(ref, safe='')}/json", what)
        if status == 404:
            return None
        if status != 200:
            raise self._refused(what, status, body)
        info = self._json(body, what)
        return info if isinstance(info, dict) else None

    def close(self) -> None:
        for item in (self._file, self._sock):
            if item is not None:
                try:
                    item.close()
                except OSError:
                    pass
        self._sock = self._file = None

    def __enter__(self) -> "EngineReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- HTTP over the socket --------------------------------------------------------------------
    def _get(self, target: str, what: str) -> tuple[int, bytes]:
        """(status, body) of ``GET target``; a kept-alive connection the engine closed meanwhile
        is reopened once."""
        deadline = time.monotonic() + self.timeout_s
        for attempt in (1, 2):
            reused = self._sock is not None
            try:
                return self._exchange(target, deadline)
            except _TooBig as exc:
                self.close()
                raise RuntimeFailure(f"{what} failed: {exc}", where="docker",
                                     fix="remove containers you no longer need (docker container prune)") from None
            except (OSError, ValueError, _Closed) as exc:  # timeouts, resets, closed, malformed HTTP
                self.close()
                if attempt == 2 or not (reused and isinstance(exc, (ConnectionError, _Closed))):
                    raise self._gone(what, exc) from None
        raise AssertionError("unreachable")

    def _exchange(self, target: str, deadline: float) -> tuple[int, bytes]:
        if self._sock is None:
            self._connect(deadline)
        self._budget(deadline)
        self._sock.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: appliance\r\n"
                           "Accept: application/json\r\n\r\n".encode("latin-1"))
        line = self._line(deadline)
        if not line:
            raise _Closed("the engine closed the connection without answering")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP response: {line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for _ in range(_READ_MAX_HEADERS + 1):
            line = self._line(deadline)
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise ValueError("the response ended inside its headers")
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ValueError("too many response headers")
        self.api_calls += 1
        self.server_header = headers.get("server") or self.server_header
        body = self._body(headers, deadline)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def _connect(self, deadline: float) -> None:
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise DockerUnavailable(f"cannot reach the Docker engine at {self.host}: {_short(exc)}",
                                    where="docker", fix=_UNREACHABLE_FIX) from None
        self._sock, self._file = sock, sock.makefile("rb")

    def _budget(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {self.timeout_s:g}s")
        self._sock.settimeout(left)

    def _line(self, deadline: float) -> bytes:
        self._budget(deadline)
        line = self._file.readline(_READ_MAX_LINE + 1)
        if len(line) > _READ_MAX_LINE:
            raise ValueError("a response line is too long")
        return line

    def _read(self, n: int, deadline: float) -> bytes:
        chunks, left = [], n
        while left > 0:
            self._budget(deadline)
            data = self._file.read(min(left, 1 << 20))
            if not data:
                raise ValueError(f"the response ended {left} byte(s) early")
            chunks.append(data)
            left -= len(data)
        return b"".join(chunks)

    def _body(self, headers: dict[str, str], deadline: float) -> bytes:
        limit = docker_adapter.READ_MAX_RESPONSE_BYTES  # read at each answer: one limit, kept in the adapter
        too_big = _TooBig(f"the engine's answer is larger than {limit >> 20} MiB")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out, size = [], 0
            while True:
                text = self._line(deadline).split(b";", 1)[0].strip()
                if not text:
                    raise ValueError("a malformed chunk")
                n = int(text, 16)
                if n == 0:
                    while self._line(deadline) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(out)
                size += n
                if size > limit:
                    raise too_big
                out.append(self._read(n, deadline))
                self._read(2, deadline)  # the chunk's CRLF
        if "content-length" in headers:
            n = int(headers["content-length"])
            if n > limit:
                raise too_big
            return self._read(n, deadline)
        out, size = [], 0  # no length: the body runs to the end of the connection
        while True:
            self._budget(deadline)
            data = self._file.read1(1 << 16)
            if not data:
                self.close()
                return b"".join(out)
            size += len(data)
            if size > limit:
                raise too_big
            out.append(data)

    # ---- errors ----------------------------------------------------------------------------------
    def _gone(self, what: str, exc: Exception) -> DockerUnavailable:
        return DockerUnavailable(f"the Docker engine at {self.host} stopped answering while {what}: {_short(exc)}",
                                 where="docker", fix="check the engine (systemctl status docker) and re-run")

    def _json(self, body: bytes, what: str):
        import json

        try:
            return json.loads(body)
        except ValueError:
            raise RuntimeFailure(f"{what} failed: the engine's answer is not JSON: {body[:120]!r}", where="docker",
                                 fix="check the engine's log (journalctl -u docker) and re-run") from None

    @staticmethod
    def _refused(what: str, status: int, body: bytes) -> RuntimeFailure:
        import json

        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        text = str(message or body.decode("utf-8", "replace").strip() or f"HTTP {status}").splitlines()[0][:300]
        return RuntimeFailure(f"{what} failed: {text}", where="docker",
                              fix="check the engine's log (journalctl -u docker) and re-run")


class _Closed(Exception):
    """The engine closed a kept-alive connection before answering (reopened once)."""


class _TooBig(Exception):
    """A response over READ_MAX_RESPONSE_BYTES (never read whole)."""


def read_client(timeout_s: float = DEFAULT_TIMEOUT_S):
    """The cheapest client for read-only calls (list, inspect): :class:`EngineReader` when
    ``DOCKER_HOST`` is a unix socket (the default), else the SDK's :class:`Docker` (tcp://,
    ssh://, TLS). Either raises DockerUnavailable / RuntimeFailure the same way."""
    if docker_host().startswith("unix://"):
        return EngineReader(timeout_s)
    return Docker(timeout_s=timeout_s)
