"""Planner test helpers: inventories come from node snapshots through the real detector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from tests.support import NODES, REPO


def node(name: str) -> Path:
    if (NODES / name).is_dir():
        return NODES / name
    raise FileNotFoundError(f"node snapshot {name} not found under {NODES}")


@lru_cache(maxsize=None)
def inventory(name: str):
    from appliance.inventory.detect import detect

    return detect(snapshot=str(node(name)), usage=False)


@pytest.fixture(scope="session")
def catalog():
    from appliance.catalog import load_catalog

    return load_catalog()


@pytest.fixture(scope="session")
def templated_catalog():
    """The shipped catalog + the templated test overlay (demo-engine, demo-chat, demo-embed,
    the demo trainer recipes: tests/fixtures/catalog/templated.yaml)."""
    from tests.stack_support import templated_catalog as load

    return load()


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=120)


def plan_json(*args: str, env: dict | None = None) -> tuple[int, dict | None, str]:
    proc = run_cli("plan", *args, "--json", env=env)
    data = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, data, proc.stderr
