"""Fixtures for the training tests: datasets, a unique instance, free ports, cleanup.

Every Docker object a test creates carries ``appliance.instance=<unique name>``; fixtures
purge all of them (containers, networks, volumes) afterwards, so concurrent test runs and
other helpers' stacks are never touched (helpers: tests/stack_support.py).

The demo trainer recipes (``lora-cpu-demo``, ``full-cpu-demo``) and the model they train
(``demo-chat``) are test fixtures, not shipped: every test here gets the templated catalog
overlay in its data dir (:func:`tests.stack_support.install_templated`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.stack_support import install_templated, purge_instance, unique_instance
from tests.support import H200, NODES  # noqa: F401 - H200 re-exported to the training tests

ASCEND8 = NODES / "ascend-910b-8npu"

CHAT = [
    {"messages": [{"role": "user", "content": "What are your opening hours?"},
                  {"role": "assistant",
                   "content": "We are open from nine to five on weekdays and closed on weekends."}]},
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


@pytest.fixture(autouse=True)
def _templated_overlay():
    """The demo trainer and demo-chat in this test's data dir (APPLIANCE_DATA_DIR, set by the
    root conftest before this runs); a module stack (DemoStack) installs it in its own."""
    from appliance.paths import data_dir

    install_templated(data_dir())


@pytest.fixture
def chat_dataset(tmp_path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", CHAT * 4)


@pytest.fixture
def instance(monkeypatch):
    name = unique_instance("tt")
    monkeypatch.setenv("APPLIANCE_INSTANCE", name)
    yield name
    purge_instance(name)
