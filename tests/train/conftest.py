"""Fixtures for the training tests: datasets, a unique instance, free ports, cleanup.

Every Docker object a test creates carries ``appliance.instance=<unique name>``; fixtures
purge all of them (containers, networks, volumes) afterwards, so concurrent test runs and
other helpers' stacks are never touched.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
H200 = SHARED / "fixtures" / "nodes" / "h200-1gpu"
ASCEND8 = REPO / "tests" / "fixtures" / "nodes" / "ascend-910b-8npu"

CHAT = [
    {"messages": [{"role": "user", "content": "What are your opening hours?"},
                  {"role": "assistant", "content": "We are open from nine to five on weekdays and closed on weekends."}]},
    {"messages": [{"role": "user", "content": "Where is the office?"},
                  {"role": "assistant", "content": "The office is at 12 Harbour Street next to the station."}]},
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "How do I reset my password?"},
                  {"role": "assistant", "content": "Open settings, choose security and press reset password."}]},
]
INSTRUCTION = [
    {"instruction": "Translate to French", "input": "good morning", "output": "bonjour"},
    {"instruction": "Name the capital of Peru", "output": "Lima is the capital of Peru."},
]


def write_jsonl(path: Path, records: list, *, raw_lines: dict[int, str] | None = None) -> Path:
    """Records as JSON Lines; ``raw_lines`` replaces line N (1-based) with raw text."""
    lines = [json.dumps(r) for r in records]
    for number, text in (raw_lines or {}).items():
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def chat_dataset(tmp_path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", CHAT * 4)


def free_port_block(count: int = 1) -> int:
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


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=str(REPO))


def wait_for(predicate, timeout_s: float, interval_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return predicate()


@pytest.fixture
def instance(monkeypatch):
    name = f"tt{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("APPLIANCE_INSTANCE", name)
    yield name
    purge_instance(name)
