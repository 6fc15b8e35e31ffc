"""Compose the NVIDIA node fixtures under tests/fixtures/nodes/nvidia-* (run once; output committed).

These nodes are composed by hand in the layout of the real h200-1gpu capture: PCI ids and
classes of real products (pci.ids / shared/reference/chips.md), /proc and /sys files in the
formats the NVIDIA driver writes. Re-run after changing this script:

    python3 tests/detect/make_nvidia_fixtures.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

NODES = Path(__file__).resolve().parents[1] / "fixtures" / "nodes"


def _w(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def _pci(root: Path, bdf: str, vendor: str, device: str, cls: str, sub: tuple[str, str], numa: int,
         driver: str | None) -> None:
    base = f"sys/bus/pci/devices/{bdf}"
    _w(root, f"{base}/vendor", f"0x{vendor}\n")
    _w(root, f"{base}/device", f"0x{device}\n")
    _w(root, f"{base}/class", f"0x{cls}\n")
    _w(root, f"{base}/subsystem_vendor", f"0x{sub[0]}\n")
    _w(root, f"{base}/subsystem_device", f"0x{sub[1]}\n")
    _w(root, f"{base}/numa_node", f"{numa}\n")
    if driver:
        _w(root, f"{base}/driver", f"../../../../bus/pci/drivers/{driver}\n")


def _node_basics(root: Path, hostname: str, kernel: str, os_pretty: str, version_id: str, cpus: int,
                 cpu_model: str, mem_kb: int, modules: list[str]) -> None:
    _w(root, "etc/os-release", f'PRETTY_NAME="{os_pretty}"\nNAME="Ubuntu"\nVERSION_ID="{version_id}"\nID=ubuntu\n')
    _w(root, "etc/hostname", hostname + "\n")
    _w(root, "proc/sys/kernel/hostname", hostname + "\n")
    _w(root, "proc/sys/kernel/osrelease", kernel + "\n")
    _w(root, "sys/devices/system/cpu/online", f"0-{cpus - 1}\n")
    _w(root, "proc/meminfo", f"MemTotal:       {mem_kb} kB\nMemFree:        {mem_kb // 2} kB\n")
    flags = ("fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ht syscall nx lm avx fma f16c avx2 "
             "avx512f avx512_vnni")
    cpuinfo = "".join(
        f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: {cpu_model}\nflags\t\t: {flags}\n\n"
        for i in range(cpus))
    _w(root, "proc/cpuinfo", cpuinfo)
    _w(root, "proc/modules", "".join(f"{m} 16384 0 - Live 0x0000000000000000\n" for m in modules))


def _index(snap: Path, commands: list[tuple[list[str], str, str]]) -> None:
    out = snap / "tool-output"
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for argv, name, text in commands:
        (out / name).write_text(text)
        entries.append({"argv": argv, "file": name, "exit_code": 0})
    (out / "index.json").write_text(json.dumps({"format": "appliance-node-snapshot/1", "captured": "composed",
                                                "commands": entries}, indent=1) + "\n")


def nodriver_2gpu() -> None:
    snap = NODES / "nvidia-nodriver-2gpu"
    shutil.rmtree(snap, ignore_errors=True)
    root = snap / "root"
    _node_basics(root, "gpu-node-07", "5.15.0-125-generic", "Ubuntu 22.04.5 LTS", "22.04", 32,
                 "Intel(R) Xeon(R) Platinum 8462Y+", 1056613500, ["drm", "ast", "mlx5_core", "nvme"])
    _pci(root, "0000:00:00.0", "8086", "09a2", "060000", ("8086", "0000"), 0, None)
    _pci(root, "0000:03:00.0", "1a03", "2000", "030000", ("1a03", "2000"), 0, "ast")
    _pci(root, "0000:18:00.0", "10de", "2330", "030200", ("10de", "16c1"), 0, None)
    _pci(root, "0000:9a:00.0", "10de", "2330", "030200", ("10de", "16c1"), 1, None)
    _pci(root, "0000:29:00.0", "15b3", "1021", "020000", ("15b3", "0041"), 0, "mlx5_core")
    _w(root, "dev/dri/card0", "")
    uname = ("Linux gpu-node-07 5.15.0-125-generic #135-Ubuntu SMP Fri Sep 27 13:53:58 UTC 2024 "
             "x86_64 x86_64 x86_64 GNU/Linux\n")
    lscpu = ("Architecture:                         x86_64\nCPU(s):                               32\n"
             "On-line CPU(s) list:                  0-31\nVendor ID:                            GenuineIntel\n"
             "Model name:                           Intel(R) Xeon(R) Platinum 8462Y+\n")
    _index(snap, [(["uname", "-a"], "uname.txt", uname), (["lscpu"], "lscpu.txt", lscpu)])
    (snap / "README.md").write_text("""# Node fixture: two NVIDIA H100 SXM5, no NVIDIA driver installed (composed)

An installer's first look at a fresh GPU server: the two H100 (`10de:2330`, class `030200`,
subsystem `10de:16c1`) are on the PCI bus at `0000:18:00.0` (NUMA 0) and `0000:9a:00.0` (NUMA 1)
with **no kernel driver bound**, no `nvidia` module in `/proc/modules`, no `/proc/driver/nvidia`,
no `/dev/nvidia*` and no `nvidia-smi` (absent from `tool-output/index.json`). Also: host bridge,
ASPEED BMC VGA `1a03:2000` (driver `ast`, with `/dev/dri/card0`), Mellanox ConnectX-6 `15b3:1021`.

Composed by hand (not a capture) by `tests/detect/make_nvidia_fixtures.py`.

Expected: two `nvidia` accelerators, model `NVIDIA H100 80GB HBM3`, memory 81559 MiB and compute
capability 9.0 from the product table, `driver_version` null, runtime null, health `warning`, and a
hint to install the driver; node `gpu-node-07`, Ubuntu 22.04.5 LTS, 32 CPUs.
""")


def huawei_bmc_2gpu() -> None:
    snap = NODES / "nvidia-huawei-bmc"
    shutil.rmtree(snap, ignore_errors=True)
    root = snap / "root"
    _node_basics(root, "hw-gpu-01", "5.15.0-91-generic", "Ubuntu 22.04.3 LTS", "22.04", 64,
                 "Intel(R) Xeon(R) Gold 6348 CPU @ 2.60GHz", 527923200,
                 ["nvidia_uvm", "nvidia_drm", "nvidia_modeset", "nvidia", "hibmc_drm", "hinic", "drm"])
    _pci(root, "0000:00:00.0", "8086", "09a2", "060000", ("19e5", "0000"), 0, None)
    _pci(root, "0000:03:00.0", "19e5", "1711", "030000", ("19e5", "1711"), 0, "hibmc-drm")
    _pci(root, "0000:1a:00.0", "19e5", "1822", "020000", ("19e5", "d139"), 0, "hinic")
    _pci(root, "0000:1a:00.1", "19e5", "1822", "020000", ("19e5", "d139"), 0, "hinic")
    gpus = [("0000:4f:00.0", 0, "GPU-6c4e1b7a-3f0e-4d8b-9c52-1e0a7b3d5f21"),
            ("0000:ce:00.0", 1, "GPU-0f9d2c4b-8a71-4e36-b5d0-7c2e9a1f4b63")]
    for bdf, minor, uuid in gpus:
        _pci(root, bdf, "10de", "26b9", "030200", ("10de", "1851"), minor, "nvidia")
        _w(root, f"proc/driver/nvidia/gpus/{bdf}/information",
           f"Model: \t\t NVIDIA L40S\nIRQ:   \t\t {180 + minor}\nGPU UUID: \t {uuid}\n"
           f"Video BIOS: \t 95.02.5d.00.01\nBus Type: \t PCIe\nDMA Size: \t 47 bits\n"
           f"DMA Mask: \t 0x7fffffffffff\nBus Location: \t {bdf}\nDevice Minor: \t {minor}\n"
           f"GPU Excluded:\t No\n")
        _w(root, f"dev/nvidia{minor}", "")
    _w(root, "proc/driver/nvidia/version",
       "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.05  Tue Oct  8 03:22:07 UTC 2024\n"
       "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n")
    _w(root, "sys/module/nvidia/version", "550.127.05\n")
    for name in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        _w(root, f"dev/{name}", "")
    _w(root, "dev/dri/card0", "")
    uname = ("Linux hw-gpu-01 5.15.0-91-generic #101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023 "
             "x86_64 x86_64 x86_64 GNU/Linux\n")
    _index(snap, [(["uname", "-a"], "uname.txt", uname)])
    (snap / "README.md").write_text("""# Node fixture: NVIDIA L40S server built by Huawei \
(BMC VGA and NICs are Huawei PCI devices; composed)

Two NVIDIA L40S (`10de:26b9`, class `030200`) with driver 550.127.05 loaded (older
`/proc/driver/nvidia/version` format: `NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.05 ...`),
per-GPU `/proc/driver/nvidia/gpus/<bdf>/information`, `/dev/nvidia0..1`. The traps: the server's
BMC VGA is a **Huawei `19e5:1711`** (class `030000`, driver `hibmc-drm`) and its NIC a **Huawei
`19e5:1822`** (Hi1822, class `020000`, driver `hinic`): Huawei's PCI vendor id is also Ascend's,
so an Ascend driver that does not filter by class would report NPUs here. `nvidia-smi` is absent from
the index (layers a and b only).

Composed by hand (not a capture) by `tests/detect/make_nvidia_fixtures.py`; the UUIDs are made up.

Expected: exactly two accelerators, both `nvidia`, `NVIDIA L40S`, 46068 MiB (product table), driver
550.127.05 (from /proc), runtime cuda 12.4 (driver-branch table), UUIDs from `information`; no `ascend`
device.
""")


if __name__ == "__main__":
    nodriver_2gpu()
    huawei_bmc_2gpu()
    print("written:", ", ".join(p.name for p in sorted(NODES.glob("nvidia-*"))))
