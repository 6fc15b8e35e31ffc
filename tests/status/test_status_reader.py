"""The light read-only Docker client status uses (docker_adapter.EngineReader), against a fake engine.

The fake is a unix socket that answers scripted HTTP responses -- the engine's framing
(Content-Length, chunked, keep-alive, a connection closed between requests) and its failures
(an error status, no answer, an oversized answer, no socket). The real engine is compared with
the SDK's client in test_status_docker.py.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from appliance.errors import DockerUnavailable, RuntimeFailure
from appliance.runtime import docker_adapter as D

CLOSE, HANG = "close", "hang"
ROW = {"Id": "a" * 64, "Names": ["/appliance-i1-gateway-1234"], "Image": "gw:1", "State": "running",
       "Status": "Up 3 minutes (healthy)", "Labels": {"appliance.service": "gateway", "appliance.instance": "i1"},
       "Created": 1714557600, "Ports": []}


def response(status: int = 200, body=b"", *, chunked: bool = False, close: bool = False,
             server: str = "Docker/24.0.7 (linux)") -> bytes:
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} X", f"Server: {server}", "Content-Type: application/json"]
    if close:
        head.append("Connection: close")
    if chunked:
        head.append("Transfer-Encoding: chunked")
        parts = [body[i:i + 7] for i in range(0, len(body), 7)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class FakeEngine:
    """Answers each request with the next scripted item (bytes, CLOSE: close without answering,
    HANG: never answer); records the request lines and counts connections."""

    def __init__(self, script: list):
        self.dir = tempfile.mkdtemp(prefix="rd", dir="/tmp")  # unix socket paths are short
        self.path = str(Path(self.dir) / "engine.sock")
        self.script = list(script)
        self.requests: list[str] = []
        self.connections = 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(4)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._answer(conn)
        except OSError:
            pass  # the client went away (as it does after refusing an oversized answer)

    def _answer(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.requests.append(head.split(b"\r\n")[0].decode())
                item = self.script.pop(0) if self.script else CLOSE
                if item == CLOSE:
                    return
                if item == HANG:
                    time.sleep(5)
                    return
                conn.sendall(item)

    def close(self) -> None:
        self.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def engine():
    made = []

    def make(*script) -> FakeEngine:
        made.append(FakeEngine(list(script)))
        return made[-1]

    yield make
    for e in made:
        e.close()


def test_list_and_inspect_on_one_kept_alive_connection(engine):
    fake = engine(response(body=[ROW], chunked=True), response(body={"Id": ROW["Id"], "State": {"Status": "running"}}),
                  response(404, {"message": "No such container: x"}))
    r = D.EngineReader(5, host=fake.host)
    [c] = r.list_containers(["appliance.managed=true", "appliance.instance=i1"])
    assert c == D.containers_from_rows([ROW])[0]
    assert (c.name, c.health, c.service, c.created_ts) == ("appliance-i1-gateway-1234", "healthy", "gateway",
                                                            1714557600.0)
    assert r.inspect_container(ROW["Id"])["State"]["Status"] == "running"
    assert r.inspect_container("x") is None
    assert r.api_calls == 3 and r.server_header == "Docker/24.0.7 (linux)" and fake.connections == 1
    line = fake.requests[0]
    assert line.startswith("GET /containers/json?all=1&filters=") and line.endswith(" HTTP/1.1")
    query = line.split("filters=", 1)[1].split(" ")[0]
    from urllib.parse import unquote

    assert json.loads(unquote(query)) == {"label": ["appliance.managed=true", "appliance.instance=i1"]}
    assert fake.requests[1] == f"GET /containers/{ROW['Id']}/json HTTP/1.1"
    r.close()


def test_a_connection_the_engine_closed_is_reopened_once(engine):
    fake = engine(response(body=[]), CLOSE, response(body=[ROW]), response(body=[], close=True), response(body=[]))
    r = D.EngineReader(5, host=fake.host)
    assert r.list_containers([]) == []
    assert len(r.list_containers([])) == 1      # the kept connection was closed: a new one
    assert r.list_containers([]) == []          # "Connection: close" honoured ...
    assert r.list_containers([]) == []          # ... the next request opens another
    assert fake.connections == 3 and r.api_calls == 4


def test_an_engine_error_is_a_runtime_failure_with_its_message(engine):
    fake = engine(response(500, {"message": "error during connect: boom"}))
    with pytest.raises(RuntimeFailure) as err:
        D.EngineReader(5, host=fake.host).list_containers([])
    assert not isinstance(err.value, DockerUnavailable)
    assert err.value.message == "listing containers failed: error during connect: boom"


def test_no_socket_is_docker_unavailable_with_the_fix(tmp_path):
    host = f"unix://{tmp_path}/none.sock"
    with pytest.raises(DockerUnavailable) as err:
        D.EngineReader(5, host=host).list_containers([])
    assert err.value.message.startswith(f"cannot reach the Docker engine at {host}: ")
    assert err.value.where == "docker" and "DOCKER_HOST" in err.value.fix


def test_no_answer_is_bounded_by_the_timeout(engine):
    fake = engine(HANG)
    t0 = time.monotonic()
    with pytest.raises(DockerUnavailable) as err:
        D.EngineReader(0.3, host=fake.host).list_containers([])
    assert time.monotonic() - t0 < 3
    assert "stopped answering while listing containers" in err.value.message


def test_a_closed_fresh_connection_or_garbage_is_docker_unavailable(engine):
    for item in (CLOSE, b"SSH-2.0-OpenSSH\r\n\r\n"):
        fake = engine(item)
        with pytest.raises(DockerUnavailable, match="stopped answering while inspecting container"):
            D.EngineReader(5, host=fake.host).inspect_container("abc")


def test_an_oversized_answer_is_refused_unread(engine, monkeypatch):
    monkeypatch.setattr(D, "READ_MAX_RESPONSE_BYTES", 1000)
    big = [ROW] * 20
    for chunked in (False, True):
        fake = engine(response(body=big, chunked=chunked))
        with pytest.raises(RuntimeFailure, match="larger than"):
            D.EngineReader(5, host=fake.host).list_containers([])


def test_read_client_is_the_light_reader_on_a_unix_socket_only(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert isinstance(D.read_client(), D.EngineReader)
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    with pytest.raises(DockerUnavailable):  # the SDK's client for tcp://, ssh://, TLS
        D.read_client(timeout_s=2)
    with pytest.raises(ValueError):
        D.EngineReader(host="tcp://127.0.0.1:2375")
