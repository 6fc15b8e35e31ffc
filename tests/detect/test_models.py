"""The inventory records: pydantic-like API over dataclasses, declared types kept by every driver.

Detection does not import pydantic (start-up time, see appliance/inventory/models.py), so
nothing validates what drivers store; this test checks every snapshot's inventory against the
declared field types instead, so a driver that stores "65536" for memory_mib fails here.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from appliance.inventory import models as M
from appliance.inventory.detect import detect
from tests.support import H200, NODES

REPO = Path(__file__).resolve().parents[2]
SNAPSHOTS = sorted(p for p in NODES.iterdir() if (p / "root").is_dir())
assert H200 in SNAPSHOTS


def _matches(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key, val = typing.get_args(annotation)
        return isinstance(value, dict) and all(_matches(k, key) and _matches(v, val) for k, v in value.items())
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _check(record, path: str) -> list[str]:
    problems = []
    hints = typing.get_type_hints(type(record))
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if not _matches(value, hints[f.name]):
            problems.append(f"{path}.{f.name} = {value!r} is not {hints[f.name]}")
        for item in (value if isinstance(value, list) else [value]):
            if dataclasses.is_dataclass(item):
                problems += _check(item, f"{path}.{f.name}")
    return problems


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda p: p.name)
@pytest.mark.parametrize("usage", [True, False], ids=["usage", "no-usage"])
def test_every_snapshot_inventory_has_the_declared_types(snapshot, usage):
    inv = detect(snapshot=snapshot, usage=usage)
    assert _check(inv, "inventory") == []


def test_live_inventory_has_the_declared_types():
    assert _check(detect(usage=True), "inventory") == []


def test_record_api_dump_copy_and_json():
    acc = M.Accelerator(vendor="nvidia", model="NVIDIA H200", index=0, backend="cuda",
                        runtime=M.Runtime(name="cuda", version="13.0"), usage=M.Usage(temperature_c=37.0))
    dumped = acc.model_dump(mode="json")
    assert list(dumped)[:4] == ["vendor", "model", "index", "backend"]
    assert dumped["runtime"] == {"name": "cuda", "version": "13.0", "source": None}
    deep = acc.model_copy(deep=True)
    deep.runtime.version = "12.4"
    assert acc.runtime.version == "13.0"  # a deep copy shares nothing
    shallow = acc.model_copy(update={"dev_nodes": ["/dev/nvidia0"]})
    assert shallow.dev_nodes == ["/dev/nvidia0"] and acc.dev_nodes == []
    assert '"model": "NVIDIA H200"' in acc.model_dump_json()
    with pytest.raises(TypeError):
        M.Accelerator(vendor="nvidia", model="x", index=0)  # backend is required


def test_detect_does_not_import_pydantic_docker_or_ansible():
    h200 = SNAPSHOTS[-1]
    code = ("import sys\nfrom appliance.cli import main\n"
            f"try:\n    main(['detect', '--json', '--snapshot', {str(h200)!r}])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('pydantic', 'docker', 'ansible_runner', 'asyncio') if m in sys.modules),"
            " file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    assert "HEAVY []" in res.stderr, res.stderr
