"""Preflight: check the host before anything changes (``appliance preflight``, ``init``, ``upgrade``).

Ordered rules, each ``pass``/``warn``/``fail`` (or ``skip`` when the rule cannot be checked
from where it runs, e.g. a port on a snapshot) with a message and a fix hint, in the style of
Replicated's troubleshoot preflights. The report's exit code is 0 (all pass), 4 (a warning)
or 3 (a failure), so scripts can branch on it.

Every rule reads the machine through a :class:`HostView`: the live node (root ``/``), a fake
root (``LiveHost(root=DIR)``: files under DIR, Docker and the network still live) or a node
snapshot (files and recorded tool output only). That is what lets the tests make each rule
fail with a directory instead of a broken machine. The rules and their thresholds are data
at the top of this module; ``docs/preflight.md`` lists them.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Sequence

from appliance.inventory.hostview import HostView, LiveHost
from appliance.provision.models import PreflightReport, RuleResult

# ---- thresholds and tables (data, not code) ------------------------------------------------
SUPPORTED_OS: dict[str, tuple[str, ...]] = {
    "ubuntu": ("20.04", "22.04", "24.04"),
    "debian": ("11", "12", "13"),
    "rhel": ("8", "9"), "rocky": ("8", "9"), "almalinux": ("8", "9"), "ol": ("8", "9"),
    "centos": ("8", "9"), "anolis": ("8", "23"),
    "openeuler": ("20.03", "22.03", "24.03"),
    "kylin": ("V10", "V11"), "uos": ("20",),
}
# RHEL-like and Debian-like major versions match by prefix ("9.4" -> "9")
MIN_KERNEL = "4.18"            # below: fail (RHEL 8 / openEuler baseline for vendor drivers)
RECOMMENDED_KERNEL = "5.4"     # below: warn
MIN_CPUS, RECOMMENDED_CPUS = 2, 8
MIN_MEMORY_MIB, RECOMMENDED_MEMORY_MIB = 8 * 1024, 32 * 1024
MIN_FREE_DISK_MIB = 10 * 1024  # warn below this even with no images to load
MIN_DOCKER, RECOMMENDED_DOCKER = "19.03", "20.10"   # 19.03: first with --gpus / device requests
DOCKER_DATA_ROOT = "/var/lib/docker"
# What a chip needs from the kernel: (kind, level); level "require" fails, "recommend" warns.
CHIP_KERNEL_NEEDS: dict[str, list[tuple[str, str]]] = {
    "amd": [("iommu-pt", "recommend")],      # AMD Instinct tuning guides: iommu=pt
    "hygon": [("iommu-pt", "recommend")],    # DCU follows the ROCm guidance
    "gaudi": [("hugepages", "require")],     # Intel Gaudi's software stack uses huge pages
}

STATUS_ORDER = {"skip": 0, "pass": 0, "warn": 1, "fail": 2}
EXIT_CODES = {"pass": 0, "warn": 4, "fail": 3}


@dataclass
class Context:
    host: HostView
    inventory: object
    images_mib: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    allowed_busy_ports: Collection[int] = ()
    packages_dir: Path | None = None

    @property
    def real(self) -> bool:
        """The machine itself (root ``/``): only then do programs and syscalls describe it."""
        return self.host.live and os.path.realpath(str(self.host.root)) == "/"

    @property
    def snapshot(self) -> bool:
        return not self.host.live


def _r(rule_id: str, title: str, status: str, message: str, fix: str | None = None, **details) -> RuleResult:
    return RuleResult(id=rule_id, title=title, status=status, message=message,
                      fix=fix if status in ("warn", "fail") else None, details=details)


def _older(a: str, b: str) -> bool:
    from appliance.catalog.versions import compare

    return compare(a, b) < 0


# ---- rules ---------------------------------------------------------------------------------
def rule_os(ctx: Context) -> RuleResult:
    title = "OS supported"
    text = ctx.host.read_text("/etc/os-release") or ctx.host.read_text("/usr/lib/os-release")
    if not text:
        return _r("os", title, "fail", "no /etc/os-release: cannot tell which OS this is",
                  "run on a supported Linux distribution (docs/preflight.md lists them)")
    osr = {k: v.strip().strip('"') for k, _, v in (ln.partition("=") for ln in text.splitlines()) if v}
    os_id, version = osr.get("ID", "").lower(), osr.get("VERSION_ID", "")
    name = osr.get("PRETTY_NAME") or f"{os_id} {version}"
    supported = SUPPORTED_OS.get(os_id)
    if supported is None:
        return _r("os", title, "warn", f"{name} is not a tested distribution",
                  f"use one of: {', '.join(sorted(SUPPORTED_OS))}; it may still work", os_id=os_id, version=version)
    if not any(version == v or version.startswith(v + ".") or version.upper() == v.upper() for v in supported):
        return _r("os", title, "warn", f"{name}: version {version} is not tested (tested: {', '.join(supported)})",
                  f"use {os_id} {' or '.join(supported)}", os_id=os_id, version=version)
    return _r("os", title, "pass", f"{name}", os_id=os_id, version=version)


def rule_kernel(ctx: Context) -> RuleResult:
    title = "Kernel supported"
    release = ctx.host.read_value("/proc/sys/kernel/osrelease")
    if not release and ctx.real:
        import platform

        release = platform.release()
    if not release and ctx.snapshot:
        release = getattr(ctx.inventory.node, "kernel", None)
    if not release:
        return _r("kernel", title, "warn", "kernel release unknown (no /proc/sys/kernel/osrelease)",
                  "check `uname -r` by hand")
    number = re.match(r"[\d.]+", release)
    version = number.group(0).rstrip(".") if number else release
    if _older(version, MIN_KERNEL):
        return _r("kernel", title, "fail", f"kernel {release} is older than {MIN_KERNEL}",
                  f"upgrade to a kernel >= {MIN_KERNEL} (vendor drivers do not build on older ones)",
                  release=release)
    if _older(version, RECOMMENDED_KERNEL):
        return _r("kernel", title, "warn", f"kernel {release} is older than the recommended {RECOMMENDED_KERNEL}",
                  f"upgrade to a kernel >= {RECOMMENDED_KERNEL}", release=release)
    return _r("kernel", title, "pass", f"kernel {release}", release=release)


def _cpu_count(ctx: Context) -> int | None:
    if ctx.real:
        return os.cpu_count()
    if ctx.snapshot and getattr(ctx.inventory.node, "cpu_count", None):
        return ctx.inventory.node.cpu_count
    text = ctx.host.read_text("/proc/cpuinfo") or ""
    count = len(re.findall(r"^processor\s*:", text, re.M))
    return count or None


def _meminfo(ctx: Context, key: str) -> int | None:
    m = re.search(rf"^{key}:\s+(\d+)", ctx.host.read_text("/proc/meminfo") or "", re.M)
    return int(m.group(1)) if m else None


def rule_cpu_memory(ctx: Context) -> RuleResult:
    title = "CPU and memory"
    cpus = _cpu_count(ctx)
    mem_kib = _meminfo(ctx, "MemTotal")
    mem_mib = mem_kib // 1024 if mem_kib else None
    shown = f"{cpus or '?'} CPUs, {round(mem_mib / 1024, 1) if mem_mib else '?'} GiB memory"
    details = {"cpus": cpus, "memory_mib": mem_mib}
    if cpus is None or mem_mib is None:
        return _r("cpu-memory", title, "warn", f"{shown}: could not read /proc/cpuinfo or /proc/meminfo",
                  "check the host's CPUs and memory by hand", **details)
    if cpus < MIN_CPUS or mem_mib < MIN_MEMORY_MIB:
        return _r("cpu-memory", title, "fail",
                  f"{shown}: below the minimum of {MIN_CPUS} CPUs and {MIN_MEMORY_MIB // 1024} GiB",
                  "use a larger machine", **details)
    if cpus < RECOMMENDED_CPUS or mem_mib < RECOMMENDED_MEMORY_MIB:
        return _r("cpu-memory", title, "warn",
                  f"{shown}: below the recommended {RECOMMENDED_CPUS} CPUs and {RECOMMENDED_MEMORY_MIB // 1024} GiB",
                  "fine for the demo stack; give real model serving more CPUs and memory", **details)
    return _r("cpu-memory", title, "pass", shown, **details)


def _free_mib(ctx: Context, path: str) -> tuple[int, str] | None:
    p = Path(ctx.host.path(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize // 2**20, str(p)


def _docker_root_dir() -> str:
    """Where the live engine keeps images (``docker info``), else the default."""
    try:
        from appliance.runtime.docker_adapter import Docker, docker_root_dir

        with Docker(timeout_s=5) as docker:
            return docker_root_dir(docker)
    except Exception:  # noqa: BLE001 - unreachable Docker is the docker rule's finding, not this one's
        return DOCKER_DATA_ROOT


def rule_disk(ctx: Context) -> RuleResult:
    title = "Free disk for images"
    if ctx.snapshot:
        return _r("disk", title, "skip", "not measurable from a snapshot")
    data_root = _docker_root_dir() if ctx.real else DOCKER_DATA_ROOT
    got = _free_mib(ctx, data_root)
    if got is None:
        return _r("disk", title, "warn", f"cannot measure free space at {data_root}", "check `df -h` by hand")
    free, where = got
    need = 2 * ctx.images_mib
    details = {"path": where, "free_mib": free, "images_mib": ctx.images_mib, "needed_mib": need}
    gib = lambda mib: f"{mib / 1024:.1f} GiB"  # noqa: E731
    if free < need:
        return _r("disk", title, "fail",
                  f"{gib(free)} free at {where}, the images to load need {gib(need)} (2 × {gib(ctx.images_mib)})",
                  f"free at least {gib(need - free)} at {where} (or move Docker's data-root)", **details)
    if free < MIN_FREE_DISK_MIB:
        return _r("disk", title, "warn", f"only {gib(free)} free at {where}",
                  f"keep at least {gib(MIN_FREE_DISK_MIB)} free for images and logs", **details)
    what = f"2 × {gib(ctx.images_mib)} of images" if ctx.images_mib else "no images to load"
    return _r("disk", title, "pass", f"{gib(free)} free at {where} ({what})", **details)


def rule_docker(ctx: Context) -> RuleResult:
    title = "Docker engine"
    if ctx.snapshot:
        res = ctx.host.run(["docker", "version", "--format", "{{.Server.Version}}"])
        if not res.ok:
            return _r("docker", title, "skip", "the snapshot has no `docker version` output")
        version = res.stdout.strip()
    else:
        from appliance.errors import DockerUnavailable
        from appliance.runtime.docker_adapter import docker_host, engine_version

        try:
            version = engine_version()
        except DockerUnavailable as exc:
            return _r("docker", title, "fail", exc.message, exc.fix or "start Docker", docker_host=docker_host())
    m = re.match(r"[\d.]+", version)
    number = m.group(0).rstrip(".") if m else version
    if _older(number, MIN_DOCKER):
        return _r("docker", title, "fail", f"Docker {version} is older than {MIN_DOCKER} (no device requests)",
                  f"upgrade Docker to >= {RECOMMENDED_DOCKER}", version=version)
    if _older(number, RECOMMENDED_DOCKER):
        return _r("docker", title, "warn", f"Docker {version} is older than {RECOMMENDED_DOCKER}",
                  f"upgrade Docker to >= {RECOMMENDED_DOCKER}", version=version)
    return _r("docker", title, "pass", f"Docker {version} reachable", version=version)


def rule_cgroup(ctx: Context) -> RuleResult:
    title = "cgroup v2"
    if ctx.host.exists("/sys/fs/cgroup/cgroup.controllers"):
        controllers = ctx.host.read_value("/sys/fs/cgroup/cgroup.controllers") or ""
        return _r("cgroup", title, "pass", f"cgroup v2 (controllers: {controllers or 'none listed'})")
    entries = ctx.host.listdir("/sys/fs/cgroup")
    if ctx.snapshot and not entries:
        return _r("cgroup", title, "skip", "the snapshot has no /sys/fs/cgroup")
    if not entries:
        return _r("cgroup", title, "fail", "no cgroup filesystem at /sys/fs/cgroup",
                  "mount cgroup2 at /sys/fs/cgroup (systemd does this at boot); containers cannot run without it")
    mode = "hybrid (v1 + unified)" if "unified" in entries else "v1"
    return _r("cgroup", title, "warn", f"cgroup {mode}: resource limits and Docker's newer features need v2",
              "boot with systemd.unified_cgroup_hierarchy=1 (default on current distributions)", mode=mode)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def rule_ports(ctx: Context) -> RuleResult:
    title = "Required ports free"
    if ctx.snapshot:
        return _r("ports", title, "skip", "ports cannot be checked on a snapshot")
    busy = {name: port for name, port in sorted(ctx.ports.items(), key=lambda kv: kv[1])
            if port not in ctx.allowed_busy_ports and not _port_free(port)}
    listed = ", ".join(f"{p} ({n})" for n, p in sorted(ctx.ports.items(), key=lambda kv: kv[1]))
    if busy:
        shown = ", ".join(f"{p} ({n})" for n, p in busy.items())
        return _r("ports", title, "fail", f"in use by another program: {shown}",
                  f"stop what listens there (`ss -ltnp 'sport = :{next(iter(busy.values()))}'`) or choose other ports",
                  busy=sorted(busy.values()), checked=sorted(ctx.ports.values()))
    return _r("ports", title, "pass", f"free: {listed}" if listed else "no ports to check",
              checked=sorted(ctx.ports.values()))


def _kernel_synced() -> bool | None:
    """The kernel's own NTP state (adjtimex, what timedatectl reports); None if unavailable."""
    import ctypes
    import ctypes.util

    class Timex(ctypes.Structure):
        _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                    ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                    ("pad", ctypes.c_byte * 256)]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != 5 and not (tx.status & 0x0040)  # TIME_ERROR / STA_UNSYNC


TIME_DAEMONS = ("chronyd", "ntpd", "systemd-timesyncd", "openntpd", "timemaster", "ptp4l")


def rule_time_sync(ctx: Context) -> RuleResult:
    title = "Time synchronised"
    if ctx.real:
        synced = _kernel_synced()
        if synced:
            return _r("time-sync", title, "pass", "the kernel clock is synchronised (adjtimex)")
    if ctx.host.exists("/run/systemd/timesync/synchronized"):
        return _r("time-sync", title, "pass", "systemd-timesyncd reports synchronised")
    if ctx.snapshot:
        return _r("time-sync", title, "skip", "the snapshot does not record the clock's sync state")
    running = sorted({(ctx.host.read_value(f"/proc/{pid}/comm") or "") for pid in ctx.host.listdir("/proc")
                      if pid.isdigit()} & set(TIME_DAEMONS))
    if running:
        return _r("time-sync", title, "warn", f"{', '.join(running)} running but the clock is not synchronised yet",
                  "wait for the first sync, check the NTP servers (`chronyc sources`)")
    return _r("time-sync", title, "warn", "no time synchronisation found (no chrony/ntpd/timesyncd)",
              "enable chrony or systemd-timesyncd against a local NTP server: "
              "license expiry and TLS depend on the clock")


def _packaged(ctx: Context, vendor: str, component: str) -> str | None:
    from appliance.provision.compat import choose_package, requirements

    if ctx.packages_dir is None:
        return None
    pick = choose_package(ctx.packages_dir, vendor, component, requirements(vendor).get(component))
    return pick.version


def _by_vendor(ctx: Context) -> dict[str, list]:
    groups: dict[str, list] = {}
    for acc in ctx.inventory.accelerators:
        groups.setdefault(acc.vendor, []).append(acc)
    return groups


def rule_accelerators(ctx: Context) -> RuleResult:
    title = "Accelerators vs driver state"
    groups = _by_vendor(ctx)
    if not groups:
        return _r("accelerators", title, "pass", "no accelerators: a CPU-only node")
    fails, warns, oks = [], [], []
    for vendor, accs in groups.items():
        broken = [a for a in accs if a.health == "error"]
        missing = [a for a in accs if not a.driver_version]
        if broken:
            fails.append(f"{vendor}: {len(broken)} of {len(accs)} device(s) in error "
                         f"({'; '.join(broken[0].hints) or 'see appliance detect'})")
        elif missing:
            version = _packaged(ctx, vendor, "driver")
            if version:
                warns.append(f"{vendor}: {len(missing)} device(s) without a driver; provision installs {version}")
            else:
                fails.append(f"{vendor}: {len(missing)} device(s) without a loaded driver and no driver package")
        else:
            oks.append(f"{vendor}: {len(accs)} device(s), driver {accs[0].driver_version}")
    message = "; ".join(fails + warns + oks)
    if fails:
        return _r("accelerators", title, "fail", message,
                  "put the vendor's driver in the package directory (<packages>/<vendor>/driver/<version>/) "
                  "and run `appliance provision`, or check `appliance detect` hints")
    if warns:
        return _r("accelerators", title, "warn", message, "run `appliance provision` (then reboot if it says so)")
    return _r("accelerators", title, "pass", message)


def rule_driver_versions(ctx: Context) -> RuleResult:
    title = "Driver/runtime vs catalog matrix"
    from appliance.provision.compat import requirements

    groups = _by_vendor(ctx)
    if not groups:
        return _r("driver-versions", title, "pass", "no accelerators: nothing to compare")
    fails, warns, oks = [], [], []
    for vendor, accs in groups.items():
        reqs = requirements(vendor)
        checks = [("driver", accs[0].driver_version)]
        runtime = accs[0].runtime
        checks.append(("runtime", runtime.version if runtime else None))
        for component, installed in checks:
            req = reqs.get(component)
            if req is None or installed is None:
                continue
            if req.admits(installed):
                oks.append(f"{vendor} {component} {installed} ({req.describe()})")
                continue
            fix_version = _packaged(ctx, vendor, component) if component == "driver" else None
            text = f"{vendor} {component} {installed} is outside the catalog's {req.describe()}"
            (warns if fix_version else fails).append(
                text + (f"; provision installs {fix_version}" if fix_version else ""))
        if not any(reqs.get(c) for c, _ in checks):
            warns.append(f"{vendor}: the catalog has no compatibility entry")
    if fails:
        return _r("driver-versions", title, "fail", "; ".join(fails + warns + oks),
                  "put a matching driver in <packages>/<vendor>/driver/<version>/ and run `appliance provision`")
    if warns:
        return _r("driver-versions", title, "warn", "; ".join(warns + oks), "run `appliance provision`")
    if not oks:
        return _r("driver-versions", title, "pass", "no installed driver/runtime version to compare yet")
    return _r("driver-versions", title, "pass", "; ".join(oks))


def rule_iommu_hugepages(ctx: Context) -> RuleResult:
    title = "IOMMU / huge pages"
    needs = [(vendor, kind, level) for vendor in _by_vendor(ctx) for kind, level in CHIP_KERNEL_NEEDS.get(vendor, [])]
    if not needs:
        return _r("iommu-hugepages", title, "pass", "no chip here needs IOMMU or huge page settings")
    cmdline = (ctx.host.read_text("/proc/cmdline") or "").split()
    huge = _meminfo(ctx, "HugePages_Total")
    fails, warns, oks = [], [], []
    for vendor, kind, level in needs:
        if kind == "iommu-pt":
            ok = "iommu=pt" in cmdline
            text = f"{vendor}: kernel command line {'has' if ok else 'lacks'} iommu=pt"
        else:
            ok = bool(huge)
            text = f"{vendor}: HugePages_Total = {huge if huge is not None else 'unknown'}"
        if ok:
            oks.append(text)
        else:
            (fails if level == "require" else warns).append(text)
    fix = ("add iommu=pt to the kernel command line (GRUB_CMDLINE_LINUX) and reboot"
           if any("iommu" in t for t in fails + warns)
           else "set vm.nr_hugepages (the gaudi role writes /etc/sysctl.d/91-appliance-gaudi.conf; "
                "`appliance provision` then reboot or `sysctl --system`)")
    if fails:
        return _r("iommu-hugepages", title, "fail", "; ".join(fails + warns + oks), fix)
    if warns:
        return _r("iommu-hugepages", title, "warn", "; ".join(warns + oks), fix)
    return _r("iommu-hugepages", title, "pass", "; ".join(oks))


RULES: list[tuple[str, Callable[[Context], RuleResult]]] = [
    ("os", rule_os), ("kernel", rule_kernel), ("cpu-memory", rule_cpu_memory), ("disk", rule_disk),
    ("docker", rule_docker), ("cgroup", rule_cgroup), ("ports", rule_ports), ("time-sync", rule_time_sync),
    ("accelerators", rule_accelerators), ("driver-versions", rule_driver_versions),
    ("iommu-hugepages", rule_iommu_hugepages),
]
RULE_IDS = tuple(rule_id for rule_id, _ in RULES)


def default_ports(plan=None) -> dict[str, int]:
    """Host ports a box needs when the caller names none: the default gateway port and the
    agent's metrics port (inference services publish no host port; the deploy pipeline passes
    the site configuration's ports instead)."""
    from appliance.runtime.models import DEFAULT_AGENT_METRICS_PORT, DEFAULT_GATEWAY_PORT

    return {"gateway": DEFAULT_GATEWAY_PORT, "agent-metrics": DEFAULT_AGENT_METRICS_PORT}


def run_preflight(inventory=None, *, host: HostView | None = None, snapshot: str | Path | None = None,
                  root: str | Path | None = None, plan=None, images_mib: int = 0,
                  ports: dict[str, int] | Sequence[int] | None = None, allowed_busy_ports: Collection[int] = (),
                  packages_dir: str | Path | None = None) -> PreflightReport:
    """Run every rule in order and return the report (never raises for a failing rule).

    ``host``/``snapshot``/``root`` choose what is checked (default: this machine).
    ``inventory``: the detected node (detected here when not given). ``images_mib``: the
    images about to be loaded (disk rule). ``allowed_busy_ports``: ports our own running
    stack already holds (a re-run of ``init``). Callers that must stop on failure call
    :meth:`PreflightReport.raise_for_failure`.
    """
    from appliance.inventory.detect import detect, host_for

    if host is None:
        host = host_for(snapshot) if snapshot else LiveHost(root or "/")
    if inventory is None:
        inventory = detect(host, usage=False)
    if ports is None:
        ports = default_ports(plan)
    elif not isinstance(ports, dict):
        ports = {f"port {p}": int(p) for p in ports}
    ctx = Context(host=host, inventory=inventory, images_mib=int(images_mib), ports=dict(ports),
                  allowed_busy_ports=set(allowed_busy_ports),
                  packages_dir=Path(packages_dir) if packages_dir else None)
    results: list[RuleResult] = []
    for rule_id, fn in RULES:
        try:
            results.append(fn(ctx))
        except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the others
            results.append(_r(rule_id, rule_id, "fail", f"the rule itself failed: {type(exc).__name__}: {exc}",
                              "re-run with --debug and report it"))
    worst = max((r.status for r in results), key=lambda s: STATUS_ORDER[s], default="pass")
    status = "pass" if worst == "skip" else worst
    where = ("live" if ctx.real else f"root:{host.root}") if host.live else f"snapshot:{getattr(host, 'directory', '')}"
    return PreflightReport(host=where, status=status, exit_code=EXIT_CODES[status], rules=results)
