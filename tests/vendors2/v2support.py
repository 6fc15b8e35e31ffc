"""Vendor tables for the Cambricon / MetaX / Moore Threads / Iluvatar / CPU-only tests.

Imported by name (conftest.py puts this folder on sys.path); the helpers themselves are in
tests/detect/detect_support.py, re-exported here. Hardware is faked only as node
snapshots (files) and, for the hang test, as a tool executable on ``PATH``; detection, the
CLI, host views and subprocess timeouts are the real code.
"""

from __future__ import annotations

from detect_support import (
    NODES,
    REPO,
    SAMPLES,
    accs_of,
    copy_snapshot,
    drop_vendor_tools,
    probe_of,
    remove_root_path,
    run_cli,
    sample,
    set_tool_output,
    write_root_file,
)

__all__ = ["NODES", "REPO", "SAMPLES", "accs_of", "copy_snapshot", "drop_vendor_tools", "probe_of",
           "remove_root_path", "run_cli", "sample", "set_tool_output", "write_root_file", "VENDOR_SNAPSHOTS"]

# snapshot -> (vendor, the tool's argv as recorded in the index)
VENDOR_SNAPSHOTS = {
    "cambricon-mlu370-8": ("cambricon", ["cnmon"]),
    "metax-c500-2": ("metax", ["mx-smi"]),
    "mthreads-s80-1": ("mthreads", ["mthreads-gmi"]),
    "iluvatar-bi-v150-2": ("iluvatar", ["ixsmi"]),
}
