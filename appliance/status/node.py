"""Node health for ``appliance status``: uptime, load, memory, the disks that matter.

Read from ``/proc`` (psutil where /proc does not say) and ``statvfs`` in a few microseconds
each -- no subprocess, no ``df``.
Only the filesystems the appliance writes to are checked (the data directory, Docker's root,
``/``); a full disk there stops upgrades, logs and the state database, so it is a problem.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from appliance.status.models import DiskStatus, Problem

DOCKER_ROOT = "/var/lib/docker"
# a disk is nearly full below these (percent free, MiB free); error below the first pair
DISK_ERROR_FREE_PCT, DISK_ERROR_FREE_MIB = 5.0, 1024
DISK_WARN_FREE_PCT, DISK_WARN_FREE_MIB = 10.0, 5 * 1024


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (the data directory may not exist yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disks(data_dir: Path, docker_root: str = DOCKER_ROOT) -> list[DiskStatus]:
    """One entry per filesystem (by device) among the data dir, Docker's root and ``/``."""
    out: list[DiskStatus] = []
    seen: set[int] = set()
    for path, purpose in ((data_dir, "appliance data (state, bundles)"), (Path(docker_root), "Docker images and logs"),
                          (Path("/"), "root filesystem")):
        target = _existing(path)
        try:
            st = os.statvfs(target)
            dev = os.stat(target).st_dev
        except OSError:
            continue
        if dev in seen:  # same filesystem as an earlier entry: reported once
            continue
        seen.add(dev)
        total = st.f_blocks * st.f_frsize // 2**20
        free = st.f_bavail * st.f_frsize // 2**20          # what we may still write
        used = (st.f_blocks - st.f_bfree) * st.f_frsize // 2**20
        if total <= 0 or used + free <= 0:
            continue
        # df's Use%: used / (used + available), so reserved or quota'd blocks do not count as free
        out.append(DiskStatus(path=str(path), purpose=purpose, total_mib=total, free_mib=free,
                              used_pct=round(100.0 * used / (used + free), 1)))
    return out


def disk_problems(items: list[DiskStatus]) -> list[Problem]:
    out = []
    for d in items:
        free_pct = 100.0 - d.used_pct
        if free_pct < DISK_ERROR_FREE_PCT or d.free_mib < DISK_ERROR_FREE_MIB:
            severity = "error"
        elif free_pct < DISK_WARN_FREE_PCT or d.free_mib < DISK_WARN_FREE_MIB:
            severity = "warning"
        else:
            continue
        out.append(Problem(severity=severity, code="disk_nearly_full", subject=f"disk {d.path}",
                           message=f"{d.free_mib / 1024:.1f} GiB free of {d.total_mib / 1024:.1f} GiB "
                                   f"({d.used_pct:.0f}% used; holds {d.purpose})",
                           fix="free space: `docker image prune` (unused images), old bundles under the data "
                               "directory, or grow the filesystem"))
    return out


def _proc_facts() -> tuple[float, int, int] | None:
    """(boot time, total bytes, available bytes) from ``/proc`` -- what psutil's ``boot_time()``
    (``btime`` of /proc/stat) and ``virtual_memory()`` (``MemTotal``, ``MemAvailable`` of
    /proc/meminfo) read on Linux, without importing psutil (a sixth of status's start-up).
    None where /proc does not say (another OS, a kernel without MemAvailable): ask psutil."""
    try:
        with open("/proc/stat", "rb") as f:
            btime = next(float(line.split()[1]) for line in f if line.startswith(b"btime "))
        mem: dict[bytes, int] = {}
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                key, _, rest = line.partition(b":")
                if key in (b"MemTotal", b"MemAvailable"):
                    mem[key] = int(rest.split()[0]) * 1024  # kB
        return btime, mem[b"MemTotal"], mem[b"MemAvailable"]
    except (OSError, StopIteration, KeyError, ValueError, IndexError):
        return None


def live_facts() -> dict:
    """hostname, uptime, CPU count, load and memory of this machine."""
    facts = _proc_facts()
    if facts is None:
        import psutil

        mem = psutil.virtual_memory()
        facts = (psutil.boot_time(), mem.total, mem.available)
    boot, total, available = facts
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {"hostname": socket.gethostname(), "uptime_s": int(time.time() - boot),
            "cpu_count": os.cpu_count(), "load_1m": load, "memory_total_mib": total // 2**20,
            "memory_available_mib": available // 2**20}
