"""The CPU as a compute backend (``cpu``): node CPU facts used by the planner.

CPU-only nodes report no accelerators; the planner then uses the ``cpu`` backend
(llama.cpp with GGUF models). Reads /proc/cpuinfo through the host view.
"""

from __future__ import annotations

from appliance.inventory.hostview import HostView

vendor = "cpu"
backend = "cpu"

# CPU features that engines care about (llama.cpp builds, AMX for Intel).
INTERESTING_FLAGS = ("avx", "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "fma", "f16c")


def cpu_facts(host: HostView) -> dict:
    """model, vendor, logical count and interesting flags from /proc/cpuinfo."""
    text = host.read_text("/proc/cpuinfo") or ""
    model = vendor_id = None
    count = 0
    flags: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        value = value.strip()
        if key == "processor":
            count += 1
        elif key in ("model name", "Model Name") and model is None:
            model = value
        elif key == "vendor_id" and vendor_id is None:
            vendor_id = value
        elif key in ("flags", "Features") and not flags:
            present = set(value.split())
            flags = [f for f in INTERESTING_FLAGS if f in present]
    return {"cpu_model": model, "cpu_vendor": vendor_id, "cpu_count": count or None, "cpu_flags": flags}
