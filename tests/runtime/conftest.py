"""Fixtures for the runtime tests: a unique instance, free host ports, cleanup of everything.

Every Docker object the tests create carries ``appliance.instance=<unique name>``; the
``instance`` fixture removes all of them afterwards (containers, networks, volumes), so
concurrent test runs and other helpers' stacks are never touched. The helpers themselves
(free ports, the CLI as a process, the purge) live in tests/stack_support.py.
"""

from __future__ import annotations

import pytest

from tests.stack_support import purge_instance, unique_instance


@pytest.fixture
def instance(monkeypatch):
    name = unique_instance("t")
    monkeypatch.setenv("APPLIANCE_INSTANCE", name)
    yield name
    purge_instance(name)


@pytest.fixture
def docker():
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        yield d
