"""The CPU as a compute backend (``cpu``): node CPU facts used by the planner.

CPU-only nodes report no accelerators; the planner then uses the ``cpu`` backend
(llama.cpp with GGUF models). Facts come through the host view, so a snapshot gives the
same answer as the live node: ``/proc/cpuinfo`` (model, vendor, flags),
``/sys/devices/system/cpu/online`` (logical CPU count), and ``lscpu`` when cpuinfo has no
model name (aarch64) or the count file is missing (older captures such as h200-1gpu,
whose cpuinfo holds only the first CPU).
"""

from __future__ import annotations

from appliance.inventory.hostview import HostView

vendor = "cpu"
backend = "cpu"

# CPU features that engines care about (llama.cpp builds, AMX for Intel).
INTERESTING_FLAGS = ("avx", "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "fma", "f16c",
                     "asimd", "sve", "sve2")
LSCPU_ARGV = ["lscpu"]


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
        if key == "processor" and value.isdigit():
            count += 1
        elif key in ("model name", "Model Name") and model is None:
            model = value
        elif key == "vendor_id" and vendor_id is None:
            vendor_id = value
        elif key in ("flags", "Features") and not flags:
            flags = _interesting(value)
    return {"cpu_model": model, "cpu_vendor": vendor_id, "cpu_count": count or None, "cpu_flags": flags}


def _interesting(flag_text: str) -> list[str]:
    present = set(flag_text.split())
    return [f for f in INTERESTING_FLAGS if f in present]


def parse_cpu_list(text: str) -> int | None:
    """``0-15,32-47`` -> 32; None when it does not parse."""
    total = 0
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            return None
        total += (int(hi) - int(lo) + 1) if sep else 1
    return total or None


def online_cpu_count(host: HostView) -> int | None:
    value = host.read_value("/sys/devices/system/cpu/online")
    return parse_cpu_list(value) if value else None


def lscpu_facts(host: HostView) -> dict:
    """What ``lscpu`` says (count, model, vendor, arch, flags); {} when it is not there."""
    res = host.run(list(LSCPU_ARGV), timeout_s=5.0)
    if not res.ok:
        return {}
    out: dict = {}
    for line in res.stdout.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "On-line CPU(s) list":
            count = parse_cpu_list(value)
            if count:
                out["cpu_count"] = count  # the online count wins over CPU(s), like the sysfs file
        elif key == "CPU(s)" and value.isdigit():
            out.setdefault("cpu_count", int(value))
        elif key == "Model name" and "cpu_model" not in out:
            out["cpu_model"] = value
        elif key == "Vendor ID" and "cpu_vendor" not in out:
            out["cpu_vendor"] = value
        elif key == "Architecture":
            out["arch"] = value
        elif key == "Flags":
            out["cpu_flags"] = _interesting(value)
    return out
