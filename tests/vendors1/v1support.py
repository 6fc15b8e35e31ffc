"""Helpers for the AMD / Hygon / Ascend / Gaudi / Kunlunxin tests (imported by name).

Hardware is faked only as node snapshots (files under tests/fixtures/nodes/, built by
make_vendor1_fixtures.py from the real samples in tests/fixtures/tool-samples/) and, for the
hang test, as a tool executable on ``PATH``. Detection, the CLI, host views and subprocess
timeouts are the real code.
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
ROCM_SMI_ARGV = ["rocm-smi", "--showproductname", "--showbus", "--showmeminfo", "vram", "--showuse",
                 "--showtemp", "--showpower", "--json"]

# snapshot -> (vendor, argv of the vendor's default listing as recorded in the index)
VENDOR_SNAPSHOTS = {
    "ascend-910b-8npu": ("ascend", ["npu-smi", "info"]),
    "ascend-310p-2npu": ("ascend", ["npu-smi", "info"]),
    "amd-mi300x-8gpu-epyc": ("amd", ["amd-smi", "list"]),
    "hygon-k100ai-8dcu": ("hygon", ["hy-smi"]),
    "gaudi2-8hpu": ("gaudi", ["hl-smi"]),
    "kunlunxin-p800-8xpu": ("kunlunxin", ["xpu-smi"]),
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
