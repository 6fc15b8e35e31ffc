"""Helpers for the Cambricon / MetaX / Moore Threads / Iluvatar / CPU-only tests.

Imported by name (conftest.py puts this folder on sys.path). Hardware is faked only as node
snapshots (files) and, for the hang test, as a tool executable on ``PATH``; detection, the
CLI, host views and subprocess timeouts are the real code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODES = REPO / "tests" / "fixtures" / "nodes"
SAMPLES = REPO / "tests" / "fixtures" / "tool-samples"

# snapshot -> (vendor, the tool's argv as recorded in the index)
VENDOR_SNAPSHOTS = {
    "cambricon-mlu370-8": ("cambricon", ["cnmon"]),
    "metax-c500-2": ("metax", ["mx-smi"]),
    "mthreads-s80-1": ("mthreads", ["mthreads-gmi"]),
    "iluvatar-bi-v150-2": ("iluvatar", ["ixsmi"]),
}


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=str(REPO))


def copy_snapshot(name: str, dst: Path) -> Path:
    shutil.copytree(NODES / name, dst)
    return dst


def set_tool_output(snap: Path, argv: list[str], text: str | None, *, exit_code: int | None = 0,
                    timed_out: bool = False) -> None:
    """Replace (or with ``text=None`` remove) the index entry for ``argv`` in a copied snapshot."""
    index_path = snap / "tool-output" / "index.json"
    index = json.loads(index_path.read_text())
    commands = [c for c in index["commands"] if c["argv"] != argv]
    if text is not None or timed_out:
        fname = "replaced-" + "-".join(argv).replace("/", "_") + ".txt"
        (snap / "tool-output" / fname).write_text(text or "")
        entry = {"argv": argv, "file": fname, "exit_code": exit_code}
        if timed_out:
            entry.update({"timed_out": True, "seconds": 10.0, "exit_code": None})
        commands.append(entry)
    index["commands"] = commands
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
