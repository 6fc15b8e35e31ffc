"""Helpers for detection tests: run the real CLI, build fake roots and fake vendor tools.

Imported by name as ``detect_support`` (conftest.py puts this folder on sys.path).

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

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
H200 = SHARED / "fixtures" / "nodes" / "h200-1gpu"
NODES = REPO / "tests" / "fixtures" / "nodes"


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=str(REPO))


def detect_json(*args: str, env: dict | None = None) -> dict:
    res = run_cli("detect", "--json", *args, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def copy_snapshot(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    for p in [dst, *dst.rglob("*")]:  # the shared copy is read-only
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
