"""Fixtures for the gateway and app tests (helpers live in gwtest.py, importable from tests here)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib: make gwtest importable

from gwtest import GATEWAY_MAIN, UPSTREAM, Proc, free_port, stop_all, wait_http  # noqa: E402


@pytest.fixture
def procs():
    started: list[Proc] = []

    def start(argv, env, log):
        p = Proc(argv, env, log)
        started.append(p)
        return p

    yield start
    stop_all(started[::-1], graceful=False)  # cleanup: a test that checks a clean shutdown stops it itself


@pytest.fixture
def upstream(procs, tmp_path):
    """Start the small test engine serving ``name``: ``upstream(name) -> base URL``;
    ``upstream.by_port[port]`` is its process."""

    class Upstreams:
        by_port: dict[int, Proc] = {}

        def __call__(self, name: str = "m1", port: int | None = None) -> str:
            port = port or free_port()
            self.by_port[port] = procs([sys.executable, str(UPSTREAM), str(port), name], {},
                                       tmp_path / f"upstream-{name}-{port}-{time.monotonic_ns()}.log")
            wait_http(f"http://127.0.0.1:{port}/health")
            return f"http://127.0.0.1:{port}"

    ups = Upstreams()
    ups.by_port = {}
    return ups


@pytest.fixture
def gateway(procs, tmp_path):
    """Start the gateway with config dir ``<APPLIANCE_DATA_DIR>/gateway``; returns an object with url/proc/dir."""

    class GW:
        pass

    def start(routes: dict, *, poll_s: float = 1.0, env: dict | None = None) -> GW:
        from appliance.gateway.keys import export_keys_file, gateway_dir

        directory = gateway_dir()
        directory.mkdir(parents=True, exist_ok=True)
        export_keys_file()
        (directory / "routes.json").write_text(json.dumps({"models": routes}))
        port = free_port()
        gw = GW()
        gw.dir = directory
        gw.url = f"http://127.0.0.1:{port}"
        gw.proc = procs([sys.executable, str(GATEWAY_MAIN)],
                        {"PORT": str(port), "GATEWAY_CONFIG_DIR": str(directory), "GATEWAY_POLL_S": str(poll_s),
                         **(env or {})}, tmp_path / f"gateway-{port}.log")
        wait_http(gw.url + "/healthz")
        return gw

    return start
