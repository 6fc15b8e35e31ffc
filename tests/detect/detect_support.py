"""Helpers for detection tests: run the real CLI, copy and edit node snapshots, build fake
roots and fake vendor tools.

Imported by name as ``detect_support`` (the conftest.py of tests/detect, tests/vendors1 and
tests/vendors2 put this folder on sys.path; v1support/v2support add only their vendor tables).

Hardware is faked only as files (a copied node root) and as tool executables on ``PATH``;
everything else (CLI, subprocess timeouts, host views, snapshots) is the real code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import H200, NODES, REPO  # noqa: F401 - re-exported to the detection tests
from tests.support import TOOL_SAMPLES as SAMPLES


def sample(name: str) -> str:
    """A real vendor tool output from tests/fixtures/tool-samples/."""
    return (SAMPLES / name).read_text()


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=str(REPO))


def detect_json(*args: str, env: dict | None = None) -> dict:
    res = run_cli("detect", "--json", *args, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def copy_snapshot(src: Path | str, dst: Path) -> Path:
    """A writable copy of a snapshot: a path, or the name of one under tests/fixtures/nodes/."""
    src = NODES / src if isinstance(src, str) else src
    shutil.copytree(src, dst, symlinks=True)
    for p in [dst, *dst.rglob("*")]:  # a source may be read-only
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def add_pci_device(root: Path, bdf: str, vendor: str, device: str, pci_class: str,
                   driver: str | None = None, numa: int = -1) -> None:
    d = root / "sys/bus/pci/devices" / bdf
    d.mkdir(parents=True, exist_ok=True)
    (d / "vendor").write_text(f"0x{vendor}\n")
    (d / "device").write_text(f"0x{device}\n")
    (d / "class").write_text(f"0x{pci_class}\n")
    (d / "subsystem_vendor").write_text(f"0x{vendor}\n")
    (d / "subsystem_device").write_text("0x0000\n")
    (d / "numa_node").write_text(f"{numa}\n")
    if driver:
        (d / "driver").write_text(f"../../../../bus/pci/drivers/{driver}\n")


def fake_tool(bin_dir: Path, name: str, script: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return path


def path_with(bin_dir: Path) -> str:
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def strip_timings(inv: dict) -> dict:
    """An inventory without what legitimately differs between two runs (timings, source)."""
    inv = json.loads(json.dumps(inv))
    inv.pop("source", None)
    for probe in inv.get("probes", []):
        probe.pop("seconds", None)
        for step in probe.get("steps", []):
            step.pop("seconds", None)
    return inv


def set_tool_output(snap: Path, argv: list[str], text: str | None, *, exit_code: int | None = 0,
                    timed_out: bool = False) -> None:
    """Replace (or with ``text=None`` remove) the index entry for ``argv`` in a copied snapshot."""
    index_path = snap / "tool-output" / "index.json"
    index = json.loads(index_path.read_text())
    commands = [c for c in index["commands"] if c["argv"] != argv]
    if text is not None or timed_out:
        fname = "replaced-" + "-".join(argv).replace("/", "_")[:60] + ".txt"
        (snap / "tool-output" / fname).write_text(text or "")
        entry = {"argv": argv, "file": fname, "exit_code": exit_code}
        if timed_out:
            entry.update({"timed_out": True, "seconds": 10.0, "exit_code": None})
        commands.append(entry)
    index["commands"] = commands
    index_path.write_text(json.dumps(index, indent=1))


def drop_vendor_tools(snap: Path, tool: str) -> None:
    """Remove every recorded command of one tool (as if it were not installed)."""
    index_path = snap / "tool-output" / "index.json"
    index = json.loads(index_path.read_text())
    index["commands"] = [c for c in index["commands"] if c["argv"][0] != tool]
    index_path.write_text(json.dumps(index, indent=1))


def write_root_file(snap: Path, path: str, text: str) -> None:
    p = snap / "root" / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def remove_root_path(snap: Path, path: str) -> None:
    p = snap / "root" / path.lstrip("/")
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()


def accs_of(inv, vendor: str):
    return [a for a in inv.accelerators if a.vendor == vendor]


def probe_of(inv, vendor: str):
    return next(p for p in inv.probes if p.driver == vendor)
