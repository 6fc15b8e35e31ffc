"""Vendor tables for the AMD / Hygon / Ascend / Gaudi / Kunlunxin tests (imported by name); the
helpers themselves are in tests/detect/detect_support.py, re-exported here.

Hardware is faked only as node snapshots (files under tests/fixtures/nodes/, built by
make_vendor1_fixtures.py from the real samples in tests/fixtures/tool-samples/) and, for the
hang test, as a tool executable on ``PATH``. Detection, the CLI, host views and subprocess
timeouts are the real code.
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
           "remove_root_path", "run_cli", "sample", "set_tool_output", "write_root_file", "ROCM_SMI_ARGV",
           "VENDOR_SNAPSHOTS"]

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
