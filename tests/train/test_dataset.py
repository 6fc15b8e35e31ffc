"""Dataset validation: good files pass with the right summary, each bad record names its line."""

from __future__ import annotations

import json

import pytest

from appliance.errors import UsageError
from appliance.train.dataset import validate_dataset
from tests.stack_support import run_cli
from tests.train.conftest import CHAT, INSTRUCTION, write_jsonl


def test_chat_dataset_summary(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", CHAT)
    s = validate_dataset(path)
    assert (s.format, s.records) == ("chat", 3)
    expected_words = sum(len(m["content"].split()) for r in CHAT for m in r["messages"])
    assert s.words == expected_words
    assert len(s.sha256) == 64 and s.size_bytes == path.stat().st_size


def test_instruction_dataset_with_blank_lines_bom_and_extra_keys(tmp_path):
    path = tmp_path / "i.jsonl"
    rows = [dict(INSTRUCTION[0], id=7, source="manual"), INSTRUCTION[1]]
    path.write_text("\ufeff" + json.dumps(rows[0]) + "\n\n   \n" + json.dumps(rows[1]) + "\n", encoding="utf-8")
    s = validate_dataset(path)
    assert (s.format, s.records) == ("instruction", 2)


@pytest.mark.parametrize("line, text, message", [
    (2, '{"messages": [{"role": "user", "content": "hi"}', "not valid JSON"),
    (3, '[1, 2]', "must be a JSON object, got list"),
    (2, '{"prompt": "x", "completion": "y"}', "unknown record format (keys: completion, prompt)"),
    (3, '{"messages": []}', "'messages' must be a non-empty list"),
    (2, '{"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]}',
     "messages[0].role is 'human'"),
    (2, '{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
    (3, '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}',
     "'messages[1].content' is empty"),
    (2, '{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}',
     "'messages[0].content' must be a string, got int"),
    (3, '{"instruction": "Say hi", "output": "hi"}', "instruction record in a chat dataset (line 1 is chat)"),
])
def test_bad_record_names_file_and_line(tmp_path, line, text, message):
    path = write_jsonl(tmp_path / "bad.jsonl", CHAT, raw_lines={line: text})
    with pytest.raises(UsageError) as err:
        validate_dataset(path)
    assert err.value.where == f"{path}:{line}"
    assert message in err.value.message
    assert err.value.fix


def test_bad_instruction_records(tmp_path):
    path = write_jsonl(tmp_path / "i.jsonl", INSTRUCTION + [{"instruction": "Say hi"}])
    with pytest.raises(UsageError) as err:
        validate_dataset(path)
    assert err.value.where == f"{path}:3" and "without 'output'" in err.value.message
    path = write_jsonl(tmp_path / "i2.jsonl", INSTRUCTION + [{"instruction": "x", "output": "y", "input": ["no"]}])
    with pytest.raises(UsageError) as err:
        validate_dataset(path)
    assert err.value.where == f"{path}:3" and "'input' must be a string" in err.value.message


def test_not_utf8_empty_and_missing(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(json.dumps(CHAT[0]).encode() + b"\n" + '{"instruction": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(UsageError) as err:
        validate_dataset(bad)
    assert err.value.where == f"{bad}:2" and "not UTF-8" in err.value.message
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(UsageError, match="no records"):
        validate_dataset(empty)
    with pytest.raises(UsageError, match="not found"):
        validate_dataset(tmp_path / "nope.jsonl")
    with pytest.raises(UsageError, match="not a regular file"):
        validate_dataset(tmp_path)


@pytest.mark.docker
def test_cli_refuses_a_malformed_dataset_before_anything_starts(tmp_path, instance):
    """One line naming file and line, exit 2; no container, job record or job directory."""
    from appliance.paths import data_dir
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    path = write_jsonl(tmp_path / "bad.jsonl", CHAT * 3, raw_lines={7: '{"messages": [{"role": "user"}]}'})
    res = run_cli("train", "submit", "--model", "demo-chat", "--dataset", str(path))
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert f"{path}:7" in lines[0] and "messages[0].content" in lines[0]
    with Docker() as d:
        assert d.list_containers(L.instance_filter(instance)) == []
    assert not (data_dir() / "train").exists()
    state = data_dir() / "state.db"
    if state.exists():
        import sqlite3

        conn = sqlite3.connect(state)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "train_jobs" in tables:
            assert conn.execute("SELECT COUNT(*) FROM train_jobs").fetchone()[0] == 0
