"""Fixtures for the runtime tests: a unique instance, free host ports, cleanup of everything.

Every Docker object the tests create carries ``appliance.instance=<unique name>``; the
``instance`` fixture removes all of them afterwards (containers, networks, volumes), so
concurrent test runs and other helpers' stacks are never touched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port_block(count: int = 1) -> int:
    """A base port such that base .. base+count-1 are free now (best effort)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65000:
            continue
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port block")


def purge_instance(inst: str) -> None:
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        for c in d.list_containers(L.instance_filter(inst)):
            d.remove(c.id, force=True)
        for n in d.list_networks(L.instance_filter(inst)):
            d.remove_network(n["id"])
        for v in d.list_volumes(L.instance_filter(inst)):
            d.remove_volume(v["name"])


@pytest.fixture
def instance(monkeypatch):
    name = f"t{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("APPLIANCE_INSTANCE", name)
    yield name
    purge_instance(name)


@pytest.fixture
def docker():
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        yield d


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=str(REPO))
