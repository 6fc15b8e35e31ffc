"""Node facts: hostname, OS, kernel, CPU, memory, disks, container engine.

One code path for live and snapshot: facts come from files read through the host view
(``/etc/os-release``, ``/proc/sys/kernel/{hostname,osrelease}``, ``/proc/meminfo``,
``/proc/cpuinfo``, ``/sys/devices/system/cpu/online``, ``/proc/mounts``) and from a few
commands (``uname -a``, ``lscpu`` when cpuinfo lacks a model, ``df -P -k <mounts>``,
``docker version``). On this very machine (``host.native``) the two commands that have
an exact in-process equivalent are skipped: ``os.uname()`` for ``uname -a`` and
``os.statvfs`` for ``df``. A capture runs the commands instead, so a replay of it gives the
same facts as a live detect. The docker SDK is never imported here (detect must start fast).

Free disk space is *usage*, like GPU memory used: it is filled only when usage is asked for.
"""

from __future__ import annotations

import os
import re

from appliance.inventory.hostview import DOCKER_VERSION_ARGV, HostView
from appliance.inventory.models import ContainerEngine, DiskInfo, Node
from chip_drivers.cpu import cpu_facts, lscpu_facts, online_cpu_count

KNOWN_ARCHES = ("x86_64", "aarch64", "arm64", "riscv64", "loongarch64", "ppc64le", "s390x", "sw_64")
# filesystems worth reporting as disks (a box stores images and model files on them)
DISK_FSTYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "reiserfs",
                          "nfs", "nfs4", "cifs", "ceph", "lustre", "gpfs", "overlay", "vfat", "exfat"})


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


def _uname(host: HostView) -> tuple[str | None, str | None, str | None]:
    """(nodename, release, machine) from ``os.uname()`` here, else ``uname -a``."""
    if host.native:
        u = os.uname()
        return u.nodename, u.release, u.machine
    res = host.run(["uname", "-a"], timeout_s=5.0)
    if not res.ok:
        return None, None, None
    parts = res.stdout.split()
    if len(parts) < 3:
        return None, None, None
    machine = None
    # "... <machine> [<processor> <platform>] GNU/Linux": the machine is the first known arch
    # after the version string.
    for token in parts[3:]:
        if token in KNOWN_ARCHES:
            machine = token
            break
    return parts[1], parts[2], machine


def node_facts(host: HostView, *, usage: bool = True) -> Node:
    osr = _os_release(host)
    cpu = cpu_facts(host)
    node = Node(
        os=osr.get("PRETTY_NAME") or osr.get("NAME"),
        os_id=osr.get("ID"),
        os_version_id=osr.get("VERSION_ID"),
        memory_mib=_meminfo_mib(host),
        cpu_model=cpu["cpu_model"], cpu_vendor=cpu["cpu_vendor"], cpu_flags=cpu["cpu_flags"],
    )
    nodename, release, machine = _uname(host)
    node.hostname = host.read_value("/proc/sys/kernel/hostname") or nodename or host.read_value("/etc/hostname")
    node.kernel = host.read_value("/proc/sys/kernel/osrelease") or release
    node.arch = machine
    node.cpu_count = online_cpu_count(host)
    if node.cpu_count is None or node.cpu_model is None or node.arch is None:
        lscpu = lscpu_facts(host)
        node.cpu_count = node.cpu_count or lscpu.get("cpu_count")
        node.cpu_model = node.cpu_model or lscpu.get("cpu_model")
        node.cpu_vendor = node.cpu_vendor or lscpu.get("cpu_vendor")
        node.arch = node.arch or lscpu.get("arch")
        if not node.cpu_flags:
            node.cpu_flags = lscpu.get("cpu_flags") or []
    node.cpu_count = node.cpu_count or cpu["cpu_count"]
    node.disks = disks(host, usage=usage)
    node.container_engine = container_engine(host)
    return node


def _unescape_mount(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted_disks(host: HostView) -> list[tuple[str, str, str]]:
    """(device, mountpoint, fstype) of real filesystems, one per device (shortest mountpoint)."""
    text = host.read_text("/proc/mounts") or ""
    best: dict[str, tuple[str, str, str]] = {}
    order: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mountpoint, fstype = (_unescape_mount(f) for f in fields[:3])
        if fstype not in DISK_FSTYPES:
            continue
        if fstype == "overlay" and mountpoint != "/":
            continue  # container layers other than our own root
        key = device if fstype != "overlay" else "overlay:/"
        if key not in best:
            order.append(key)
            best[key] = (device, mountpoint, fstype)
        elif len(mountpoint) < len(best[key][1]):
            best[key] = (device, mountpoint, fstype)
    return [best[k] for k in order]


_DF_LINE = re.compile(r"^(?P<dev>.*?)\s+(?P<size>\d+)\s+(?P<used>\d+)\s+(?P<avail>\d+)\s+(?:\d+%|-)\s+(?P<mp>/.*)$")


def disks(host: HostView, *, usage: bool) -> list[DiskInfo]:
    mounts = mounted_disks(host)
    if not mounts:
        return []
    sizes: dict[str, tuple[int, int]] = {}
    if host.native:
        for _, mp, _ in mounts:
            try:
                st = os.statvfs(mp)
            except OSError:
                continue
            sizes[mp] = (st.f_blocks * st.f_frsize // 2**20, st.f_bavail * st.f_frsize // 2**20)
    else:
        res = host.run(["df", "-P", "-k", *[mp for _, mp, _ in mounts]], timeout_s=5.0)
        if res.exit_code is not None and res.stdout:
            for line in res.stdout.splitlines()[1:]:
                m = _DF_LINE.match(line.strip())
                if m:
                    sizes[m.group("mp")] = (int(m.group("size")) // 1024, int(m.group("avail")) // 1024)
    out = []
    for device, mp, fstype in mounts:
        total, free = sizes.get(mp, (None, None))
        out.append(DiskInfo(mountpoint=mp, device=device, fstype=fstype, total_mib=total,
                            free_mib=free if usage else None))
    return out


def container_engine(host: HostView) -> ContainerEngine:
    """Docker presence and server version through the docker CLI (no SDK import)."""
    res = host.run(list(DOCKER_VERSION_ARGV), timeout_s=5.0)
    if res.ok and res.stdout.strip():
        return ContainerEngine(present=True, version=res.stdout.strip().splitlines()[0], source="docker version")
    if not res.not_found:
        return ContainerEngine(present=True, source="docker CLI (engine not reachable)")
    if host.exists("/var/run/docker.sock"):
        return ContainerEngine(present=True, source="/var/run/docker.sock")
    return ContainerEngine(present=False)
