"""Node facts: hostname, OS, kernel, CPU, memory, disks, container engine.

Live: psutil and a few files. Snapshot: the same files under ``root/`` and the recorded
``lscpu``/``uname -a``/``docker version`` outputs, so a snapshot reproduces a live run.
"""

from __future__ import annotations

import platform
import re

from appliance.inventory.hostview import HostView
from appliance.inventory.models import ContainerEngine, DiskInfo, Node
from chip_drivers.cpu import cpu_facts


def _os_release(host: HostView) -> dict[str, str]:
    text = host.read_text("/etc/os-release") or host.read_text("/usr/lib/os-release") or ""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def _meminfo_mib(host: HostView) -> int | None:
    text = host.read_text("/proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    return int(m.group(1)) // 1024 if m else None


def _lscpu_count(text: str) -> tuple[int | None, str | None, str | None]:
    count = model = arch = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "CPU(s)" and value.isdigit():
            count = int(value)
        elif key == "Model name" and model is None:
            model = value
        elif key == "Architecture":
            arch = value
    return count, model, arch


def node_facts(host: HostView) -> Node:
    osr = _os_release(host)
    cpu = cpu_facts(host)
    node = Node(
        os=osr.get("PRETTY_NAME") or osr.get("NAME"),
        os_id=osr.get("ID"),
        os_version_id=osr.get("VERSION_ID"),
        memory_mib=_meminfo_mib(host),
        **cpu,
    )
    if host.live:
        import socket

        import psutil

        node.hostname = socket.gethostname()
        uname = platform.uname()
        node.kernel = uname.release
        node.arch = uname.machine
        node.cpu_count = psutil.cpu_count(logical=True) or node.cpu_count
        node.memory_mib = node.memory_mib or psutil.virtual_memory().total // (1024 * 1024)
        node.disks = _live_disks()
    else:
        node.hostname = host.read_value("/etc/hostname") or host.read_value("/proc/sys/kernel/hostname")
        node.kernel = host.read_value("/proc/sys/kernel/osrelease")
        uname = host.run(["uname", "-a"])
        if uname.ok:
            parts = uname.stdout.split()
            if len(parts) >= 3:
                node.hostname = node.hostname or parts[1]
                node.kernel = node.kernel or parts[2]
            if len(parts) >= 2 and parts[-2] in ("x86_64", "aarch64"):
                node.arch = parts[-2]
        lscpu = host.run(["lscpu"])
        if lscpu.ok:
            count, model, arch = _lscpu_count(lscpu.stdout)
            node.cpu_count = count or node.cpu_count
            node.cpu_model = node.cpu_model or model
            node.arch = node.arch or arch
    node.container_engine = _container_engine(host)
    return node


def _live_disks() -> list[DiskInfo]:
    import psutil

    disks = []
    seen = set()
    for part in psutil.disk_partitions(all=False):
        if part.mountpoint in seen or part.fstype in ("squashfs", "overlay", "tmpfs"):
            continue
        seen.add(part.mountpoint)
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        disks.append(DiskInfo(mountpoint=part.mountpoint, device=part.device, fstype=part.fstype,
                              total_mib=usage.total // 2**20, free_mib=usage.free // 2**20))
    return disks


def _container_engine(host: HostView) -> ContainerEngine:
    """Docker presence without importing the docker SDK (detect must start fast)."""
    if host.live:
        import os

        present = os.path.exists("/var/run/docker.sock") or host.has_tool("docker") or host.has_tool("dockerd")
        return ContainerEngine(present=present, source="docker.sock" if present else None)
    res = host.run(["docker", "version", "--format", "{{.Server.Version}}"])
    if res.ok:
        return ContainerEngine(present=True, version=res.stdout.strip() or None, source="docker version")
    return ContainerEngine(present=host.exists("/var/run/docker.sock"))
