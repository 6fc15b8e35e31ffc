"""Compose the AMD / Hygon / Ascend / Gaudi / Kunlunxin node snapshots (run once; output committed).

Every vendor tool output is either a real sample from tests/fixtures/tool-samples/ copied
verbatim, or composed from such a sample by repeating its device block with other bus ids
(each snapshot's README says which). sysfs/proc/dev files follow the layout of the real
capture tests/fixtures/nodes/h200-1gpu. Re-run after changing this script:

    python3 tests/vendors1/make_vendor1_fixtures.py
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `tests.support` importable
    sys.path.insert(0, str(REPO))

from tests.support import H200, NODES  # noqa: E402
from tests.support import TOOL_SAMPLES as SAMPLES  # noqa: E402


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


class Snap:
    """One snapshot directory being written."""

    def __init__(self, name: str):
        self.dir = NODES / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.root = self.dir / "root"
        self.commands: list[dict] = []

    def file(self, rel: str, text: str) -> None:
        p = self.root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def dev(self, *names: str) -> None:
        for n in names:
            self.file(f"dev/{n}", "")

    def pci(self, bdf: str, vendor: str, device: str, cls: str, sub: tuple[str, str] | None = None,
            numa: int = -1, driver: str | None = None, files: dict[str, str] | None = None) -> None:
        base = f"sys/bus/pci/devices/{bdf}"
        sub = sub or (vendor, device)
        for key, value in (("vendor", f"0x{vendor}"), ("device", f"0x{device}"), ("class", f"0x{cls}"),
                           ("subsystem_vendor", f"0x{sub[0]}"), ("subsystem_device", f"0x{sub[1]}"),
                           ("numa_node", str(numa))):
            self.file(f"{base}/{key}", value + "\n")
        if driver:
            self.file(f"{base}/driver", f"../../../../bus/pci/drivers/{driver}\n")
        for rel, text in (files or {}).items():
            self.file(f"{base}/{rel}", text)

    def host(self, *, hostname: str, kernel: str, arch: str, os_release: str, cpus: int, cpu_model: str,
             cpuinfo: str, mem_gib: int, modules: list[str]) -> None:
        self.file("etc/os-release", os_release)
        self.file("etc/hostname", hostname + "\n")
        self.file("proc/sys/kernel/hostname", hostname + "\n")
        self.file("proc/sys/kernel/osrelease", kernel + "\n")
        self.file("sys/devices/system/cpu/online", f"0-{cpus - 1}\n")
        mem_kb = mem_gib * 1024 * 1024 - 3_600_000
        self.file("proc/meminfo", f"MemTotal:       {mem_kb} kB\nMemFree:        {mem_kb // 2} kB\n"
                                  f"MemAvailable:   {mem_kb * 3 // 4} kB\n")
        self.file("proc/cpuinfo", cpuinfo)
        self.file("proc/modules", "".join(
            f"{m} {16384 + 4096 * i} {0 if i % 3 else 1} - Live 0x0000000000000000\n"
            for i, m in enumerate(modules)))
        vendor_id = "GenuineIntel" if "Intel" in cpu_model else (
            "AuthenticAMD" if "AMD" in cpu_model else ("HygonGenuine" if "Hygon" in cpu_model else "HiSilicon"))
        self.tool(["uname", "-a"], "uname.txt",
                  f"Linux {hostname} {kernel} #1 SMP PREEMPT_DYNAMIC {arch} {arch} {arch} GNU/Linux\n")
        self.tool(["lscpu"], "lscpu.txt",
                  f"Architecture:                         {arch}\nCPU(s):                               {cpus}\n"
                  f"On-line CPU(s) list:                  0-{cpus - 1}\n"
                  f"Vendor ID:                            {vendor_id}\n"
                  f"Model name:                           {cpu_model}\n")

    def tool(self, argv: list[str], file: str, text: str, exit_code: int = 0) -> None:
        out = self.dir / "tool-output"
        out.mkdir(parents=True, exist_ok=True)
        (out / file).write_text(text)
        self.commands.append({"argv": argv, "file": file, "exit_code": exit_code})

    def finish(self, readme: str) -> None:
        out = self.dir / "tool-output"
        out.mkdir(parents=True, exist_ok=True)
        (out / "index.json").write_text(json.dumps(
            {"format": "appliance-node-snapshot/1", "captured": "composed", "commands": self.commands},
            indent=1) + "\n")
        (self.dir / "README.md").write_text(readme.strip() + "\n")


UBUNTU_2204 = ('PRETTY_NAME="Ubuntu 22.04.5 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
               'VERSION="22.04.5 LTS (Jammy Jellyfish)"\nID=ubuntu\nID_LIKE=debian\n')


def x86_cpuinfo(vendor_id: str, model: str, cpus: int, flags: str) -> str:
    return "".join(f"processor\t: {i}\nvendor_id\t: {vendor_id}\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
                   for i in range(cpus))


def aarch64_cpuinfo(cpus: int) -> str:
    return "".join(f"processor\t: {i}\nBogoMIPS\t: 200.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
                   f"atomics fphp asimdhp cpuid asimdrdm jscvt fcma dcpop asimddp asimdfhm\n"
                   f"CPU implementer\t: 0x48\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd01\n\n"
                   for i in range(cpus))


INTEL_FLAGS = ("fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ht syscall nx lm avx fma f16c avx2 "
               "avx512f avx512_vnni")
AMD_FLAGS = ("fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ht syscall nx lm avx fma f16c avx2 "
             "avx512f avx512_bf16")
HYGON_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ht syscall nx lm avx fma f16c avx2"

# ---------------------------------------------------------------------------------------------
# Ascend
# ---------------------------------------------------------------------------------------------

ASCEND_MODULES = ["drv_davinci_intf_host", "drv_devmm_host", "drv_pcie_host", "drv_devdrv_host",
                  "drv_pcie_hdc_host", "drv_vascend", "ascend_xsmem", "drv_seclib_host"]

DRIVER_VERSION_INFO = """Version={v}
ascendhal_version=7.35.23
aicpu_version=1.0
tdt_version=1.0
log_version=1.0
prof_version=2.0
dvppkernels_version=1.1
tsfw_version=1.0
Innerversion=V100R001C25SPC001B220
compatible_version=[V100R001C15],[V100R001C18],[V100R001C19],[V100R001C20],[V100R001C21],[V100R001C23],[V100R001C25]
compatible_version_fw=[7.0.0,7.8.99]
package_version={v}
"""

CANN_INFO = """package_name=Ascend-cann-toolkit
version={v}
innerversion=V100R001C25SPC001B210
compatible_version=[V100R001C15],[V100R001C18],[V100R001C19],[V100R001C20],[V100R001C21],[V100R001C23],[V100R001C25]
arch={arch}
os=linux
path={path}
"""

NPU_910B3_ROWS = [  # npu id, bus id, power, temp, HBM used (values in the range of the real samples)
    (0, "0000:C1:00.0", "101.8", 43, 3318), (1, "0000:C2:00.0", "92.0", 39, 3314),
    (2, "0000:81:00.0", "102.0", 40, 3314), (3, "0000:82:00.0", "96.2", 41, 3317),
    (4, "0000:01:00.0", "97.3", 42, 3315), (5, "0000:02:00.0", "99.9", 40, 3316),
    (6, "0000:41:00.0", "95.0", 38, 3314), (7, "0000:42:00.0", "98.4", 41, 3318),
]


def npu_smi_910b3_8card(version: str) -> str:
    """The real 910B3 listing (tool-samples/npu-smi_info_910B3_4of8_24.1.rc1.txt) extended to 8 NPUs."""
    real = sample("npu-smi_info_910B3_4of8_24.1.rc1.txt").splitlines()
    sep = "+===========================+===============+====================================================+"
    banner = real[1]
    at = banner.index("Version:")
    line = f"| npu-smi {version}".ljust(at) + f"Version: {version}"
    head = [real[0], line.ljust(len(banner) - 1) + "|"] + real[2:6]
    lines = list(head)
    for npu, bus, power, temp, used in NPU_910B3_ROWS:
        lines.append(f"| {npu}     910B3               | OK            | {power:<12}{temp:<18}0    / 0             |")
        lines.append(f"| 0                         | {bus}  | 0           0    / 0          {used:<5}/ 65536         |")
        lines.append(sep)
    lines.append("+---------------------------+---------------+----------------------------------------------------+")
    lines.append("| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |")
    lines.append(sep)
    for npu, *_ in NPU_910B3_ROWS:
        lines.append(f"| No running processes found in NPU {npu}".ljust(97) + "|")
        lines.append(sep)
    return "\n".join(lines) + "\n"


def npu_smi_m(rows: list[tuple[int, int, int, str]]) -> str:
    head = sample("npu-smi_info-m_910B3_2card.txt").splitlines()[0]
    return head + "\n" + "".join(f"{n:<31}{c:<31}{lg:<31}{name}\n" for n, c, lg, name in rows)


def kunpeng_huawei_functions(s: Snap) -> None:
    """A Kunpeng 920 host's own Huawei (19e5) functions: none is an NPU."""
    s.pci("0000:00:00.0", "19e5", "a120", "060400", numa=0, driver="pcieport")
    s.pci("0000:74:02.0", "19e5", "a230", "010700", numa=0, driver="hisi_sas_v3_hw")
    s.pci("0000:75:00.0", "19e5", "a250", "120000", numa=0, driver="hisi_zip")     # class 1200 trap
    s.pci("0000:76:00.0", "19e5", "a258", "100000", numa=0, driver="hisi_hpre")
    s.pci("0000:79:00.0", "19e5", "a255", "100000", numa=0, driver="hisi_sec2")
    s.pci("0000:7a:01.0", "19e5", "a238", "0c0330", numa=0, driver="xhci_hcd")
    s.pci("0000:7d:00.0", "19e5", "a222", "020000", numa=0, driver="hns3")
    s.pci("0000:05:00.0", "19e5", "1711", "030000", numa=0, driver="hibmc-drm")    # BMC VGA
    s.pci("0000:06:00.0", "19e5", "3758", "010400", numa=0, driver="hiraid")


def ascend_910b_8npu() -> None:
    s = Snap("ascend-910b-8npu")
    s.host(hostname="atlas800t-a2-01", kernel="5.15.0-126-generic", arch="aarch64",
           os_release=UBUNTU_2204, cpus=192, cpu_model="Kunpeng-920", cpuinfo=aarch64_cpuinfo(192),
           mem_gib=1536, modules=ASCEND_MODULES + ["hns3", "hisi_zip", "hibmc_drm"])
    kunpeng_huawei_functions(s)
    numa = {"c1": 6, "c2": 6, "81": 4, "82": 4, "01": 0, "02": 0, "41": 2, "42": 2}
    for _, bus, *_ in NPU_910B3_ROWS:
        bdf = bus.lower()
        s.pci(bdf, "19e5", "d802", "120000", numa=numa[bdf[5:7]], driver="devdrv_device_driver")
    s.dev(*[f"davinci{i}" for i in range(8)], "davinci_manager", "devmm_svm", "hisi_hdc")
    s.file("usr/local/Ascend/driver/version.info", DRIVER_VERSION_INFO.format(v="25.5.1"))
    s.file("usr/local/Ascend/ascend-toolkit/latest/aarch64-linux/ascend_toolkit_install.info",
           CANN_INFO.format(v="8.5.0", arch="aarch64", path="/usr/local/Ascend/ascend-toolkit/8.5.0/aarch64-linux"))
    s.file("etc/ascend_install.info", "UserName=HwHiAiUser\nUserGroup=HwHiAiUser\n"
                                      "Driver_Install_Path_Param=/usr/local/Ascend\n")
    s.tool(["npu-smi", "info"], "npu-smi-info.txt", npu_smi_910b3_8card("25.5.1"))
    s.tool(["npu-smi", "info", "-m"], "npu-smi-info-m.txt",
           npu_smi_m([(i, 0, i, "Ascend 910B3") for i in range(8)]))
    s.finish("""
# Node fixture: Atlas 800T A2 style server, 8 × Ascend 910B3 (composed)

**Real parts:** `tool-output/npu-smi-info.txt` keeps the exact layout of the real 910B3 listing
`tests/fixtures/tool-samples/npu-smi_info_910B3_4of8_24.1.rc1.txt` (first three NPUs at
`C1`, `C2`, `81`); the other five NPU blocks repeat that format, and a process section in
the documented `No running processes found in NPU N` form follows. `npu-smi-info-m.txt`
follows `npu-smi_info-m_910B3_2card.txt`. Power/temperature/HBM-used values are in the
range of the real samples.

**Composed:** the banner version `25.5.1` (= `driver/version.info`, the driver that pairs with
CANN 8.5.0 in the real gpustack-runtime 910B2 capture), the bus ids of NPUs 3-7 and their
NUMA nodes (pattern of that capture), PCI `19e5:d802` class `0x120000` with placeholder
subsystem ids, the Kunpeng 920 host (192 cores, 1.5 TiB, Ubuntu 22.04 aarch64) and its own
Huawei functions, `version.info` and `ascend_toolkit_install.info` (key=value layout of the
Ascend docs, CANN 8.5.0 in the classic `ascend-toolkit/latest/aarch64-linux/` path).

Traps: the Kunpeng ZIP engine `19e5:a250` has class `0x120000` (processing accelerator)
like the NPUs; the iBMC VGA `19e5:1711`, HNS NIC, SAS, SEC/HPRE engines and RAID are Huawei
functions too. None of them may be reported.

Expected: 8 accelerators, vendor `ascend`, model `Ascend 910B3`, variant `910b`, 65536 MiB
(npu-smi HBM), indices 0-7 = NPU ids with bus ids C1, C2, 81, 82, 01, 02, 41, 42, physical
ids 0-7 (`/dev/davinci0-7`), driver `25.5.1`, runtime `cann 8.5.0`.
""")


def ascend_310p_2npu() -> None:
    s = Snap("ascend-310p-2npu")
    s.host(hostname="infer-310p-02", kernel="5.15.0-119-generic", arch="x86_64", os_release=UBUNTU_2204,
           cpus=64, cpu_model="Intel(R) Xeon(R) Gold 6330 CPU @ 2.00GHz",
           cpuinfo=x86_cpuinfo("GenuineIntel", "Intel(R) Xeon(R) Gold 6330 CPU @ 2.00GHz", 64, INTEL_FLAGS),
           mem_gib=512, modules=ASCEND_MODULES + ["ast", "i40e"])
    s.pci("0000:00:00.0", "8086", "09a2", "060000", numa=0)
    s.pci("0000:03:00.0", "1a03", "2000", "030000", numa=0, driver="ast")
    s.pci("0000:82:00.0", "19e5", "d500", "120000", sub=("0200", "0100"), numa=1, driver="devdrv_device_driver")
    s.pci("0000:89:00.0", "19e5", "d500", "120000", sub=("0200", "0100"), numa=1, driver="devdrv_device_driver")
    s.dev("davinci0", "davinci1", "davinci_manager", "devmm_svm", "hisi_hdc")
    s.file("usr/local/Ascend/driver/version.info", DRIVER_VERSION_INFO.format(v="25.2.0"))
    s.file("usr/local/Ascend/cann/x86_64-linux/ascend_toolkit_install.info",
           CANN_INFO.format(v="8.5.0", arch="x86_64", path="/usr/local/Ascend/cann-8.5.0/x86_64-linux"))
    s.tool(["npu-smi", "info"], "npu-smi-info.txt", sample("npu-smi_info_310P3_2card.txt"))
    s.tool(["npu-smi", "info", "-m"], "npu-smi-info-m.txt",
           npu_smi_m([(0, 0, 0, "Ascend 310P3"), (1, 0, 1, "Ascend 310P3")]))
    s.finish("""
# Node fixture: x86 server with 2 × Atlas 300I Pro (Ascend 310P3) (composed)

**Real parts:** `tool-output/npu-smi-info.txt` is the real 310P3 listing
`tests/fixtures/tool-samples/npu-smi_info_310P3_2card.txt`, verbatim (no banner line, no HBM
column: `Chip Device` rows, memory 21534 MB per chip, bus ids `0000:82:00.0`/`0000:89:00.0`).

**Composed:** `npu-smi-info-m.txt` (layout of the real 910B3 `-m` sample, names `Ascend
310P3`), PCI `19e5:d500` class `0x120000` with subsystem `0200:0100` (Atlas 300I Pro, from
ascend-deployer's table), the host (Xeon Gold 6330, 64 threads, 512 GiB, Ubuntu 22.04 x86_64,
ASPEED BMC), `driver/version.info` 25.2.0 (the driver of the real gpustack-runtime 310P3 capture),
and CANN 8.5.0 in the newer `/usr/local/Ascend/cann/x86_64-linux/` layout.

Expected: 2 accelerators, `ascend`, `Ascend 310P3`, variant `310p`, 21534 MiB (npu-smi),
driver `25.2.0` (version.info; the listing has no banner), runtime `cann 8.5.0`.
""")


# ---------------------------------------------------------------------------------------------
# AMD
# ---------------------------------------------------------------------------------------------

MI300X = [  # bdf, numa, card, renderD, uuid
    ("0000:05:00.0", 0, 1, 128, "afff74a1-0000-1000-8054-e92b0a5d57c8"),
    ("0000:26:00.0", 0, 9, 136, "0aff74a1-0000-1000-805b-ce698de95724"),
    ("0000:46:00.0", 0, 17, 144, "97ff74a1-0000-1000-8065-fa81273af9ce"),
    ("0000:65:00.0", 0, 25, 152, "3cff74a1-0000-1000-8071-b0c2a41e6d13"),
    ("0000:85:00.0", 1, 33, 160, "d1ff74a1-0000-1000-8083-5f0e9c7b2a64"),
    ("0000:a6:00.0", 1, 41, 168, "68ff74a1-0000-1000-8094-2ad7e3c15b80"),
    ("0000:c6:00.0", 1, 49, 176, "b5ff74a1-0000-1000-80a6-9c41f0d8e237"),
    ("0000:e5:00.0", 1, 57, 184, "4eff74a1-0000-1000-80b7-e16a5b3f0c92"),
]


def amd_smi_list_8() -> str:
    """The real MI300X `amd-smi list` (first three GPUs) extended to eight in the same layout."""
    real = sample("amd-smi_list_mi300x_first3.txt")
    blocks = [f"GPU: {i}\n    BDF: {bdf}\n    UUID: {uuid}\n" for i, (bdf, _, _, _, uuid) in enumerate(MI300X)]
    text = " \n".join(blocks)
    assert text.startswith(real.rstrip("\n")), "GPUs 0-2 must stay verbatim"
    return text


def rocm_smi_json_mi300x() -> str:
    """rocm-smi --json in the key layout of the real tool-samples/rocm-smi_json_rx7800xt JSON."""
    cards = {}
    for i, (bdf, _, _, _, _) in enumerate(MI300X):
        cards[f"card{i}"] = {
            "Device Name": "Aqua Vanjaram [Instinct MI300X OAM]", "Device ID": "0x74a1", "Device Rev": "0x00",
            "Subsystem ID": "0x74a1", "GUID": str(11213 + i * 7321),
            "Temperature (Sensor edge) (C)": "N/A", "Temperature (Sensor junction) (C)": f"{40 + i}.0",
            "Current Socket Graphics Package Power (W)": f"{130 + i}.0", "GPU use (%)": "0",
            "VRAM Total Memory (B)": "206141652992", "VRAM Total Used Memory (B)": "297795584",
            "Card Series": "AMD Instinct MI300X OAM", "Card Model": "0x74a1",
            "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]", "Card SKU": "M3000100",
            "Node ID": str(2 + i), "GFX Version": "gfx942", "PCI Bus": bdf,
        }
    return json.dumps(cards, indent=4) + "\n"


def amd_mi300x_8gpu_epyc() -> None:
    s = Snap("amd-mi300x-8gpu-epyc")
    model = "AMD EPYC 9654 96-Core Processor"
    s.host(hostname="mi300x-node-01", kernel="5.15.0-122-generic", arch="x86_64", os_release=UBUNTU_2204,
           cpus=384, cpu_model=model, cpuinfo=x86_cpuinfo("AuthenticAMD", model, 384, AMD_FLAGS), mem_gib=2304,
           modules=["amdgpu", "amddrm_ttm_helper", "amdttm", "amdxcp", "amd_sched", "ast", "mlx5_core", "ccp"])
    # AMD EPYC (Genoa) functions: vendor 1022, none is a GPU; SDXI has class 0x120100.
    for bdf, dev, cls in (("0000:00:00.0", "14a4", "060000"), ("0000:00:00.2", "149e", "080600"),
                          ("0000:00:00.3", "14a6", "080700"), ("0000:00:01.0", "149f", "060000"),
                          ("0000:00:01.1", "14ab", "060400"), ("0000:00:18.0", "14ad", "060000"),
                          ("0000:00:18.1", "14ae", "060000"), ("0000:00:18.2", "14af", "060000"),
                          ("0000:00:18.3", "14b0", "060000"), ("0000:01:00.0", "14ac", "130000"),
                          ("0000:01:00.1", "14ca", "108000"), ("0000:01:00.4", "14dc", "120100"),
                          ("0000:80:00.0", "14a4", "060000"), ("0000:81:00.0", "14ac", "130000")):
        s.pci(bdf, "1022", dev, cls, numa=0 if bdf < "0000:80" else 1,
              driver={"108000": "ccp", "060400": "pcieport"}.get(cls))
    s.pci("0000:02:00.0", "1a03", "2000", "030000", numa=0, driver="ast", files={"drm/card0/dev": "226:0\n"})
    s.pci("0000:11:00.0", "15b3", "1021", "020000", numa=0, driver="mlx5_core")
    for bdf, numa, card, render, _ in MI300X:
        s.pci(bdf, "1002", "74a1", "120000", sub=("1002", "74a1"), numa=numa, driver="amdgpu",
              files={f"drm/card{card}/dev": f"226:{card}\n", f"drm/renderD{render}/dev": f"226:{render}\n"})
    s.dev("kfd", "dri/card0", *[f"dri/card{c}" for _, _, c, _, _ in MI300X],
          *[f"dri/renderD{r}" for _, _, _, r, _ in MI300X])
    s.file("sys/module/amdgpu/version", "6.10.5\n")
    s.file("opt/rocm/.info/version", "7.0.2\n")
    s.tool(["amd-smi", "list"], "amd-smi-list.txt", amd_smi_list_8())
    s.tool(["rocm-smi", "--showproductname", "--showbus", "--showmeminfo", "vram", "--showuse", "--showtemp",
            "--showpower", "--json"], "rocm-smi.json", rocm_smi_json_mi300x())
    s.finish("""
# Node fixture: 2 × AMD EPYC 9654 host with 8 × AMD Instinct MI300X (composed)

**Real parts:** `tool-output/amd-smi-list.txt` keeps the layout of the real
`tests/fixtures/tool-samples/amd-smi_list_mi300x_first3.txt` (GPUs 0-2 verbatim: bus ids
05/26/46 and UUIDs that embed the device id `74a1`, single-space separator lines); GPUs 3-7
repeat the block with composed bus ids and UUIDs. The driver version `6.10.5`, ROCm `7.0.2`,
and the DRM numbering card9/renderD136 for `26:00.0` and card17/renderD144 for `46:00.0` come
from the real gpustack-runtime MI300X cross-check sample; the others follow that step of 8.

**Composed:** `rocm-smi.json` uses the key layout of the real `rocm-smi_json_rx7800xt` sample
(`VRAM Total Memory (B)` = 196592 MiB, the figure of the gpustack capture) plus `PCI Bus`; the
host (384 threads, 2.25 TiB, Ubuntu 22.04), the EPYC's own PCI functions under vendor `1022`
(root complex, IOMMU, data fabric, PSP/CCP, dummy functions, and an SDXI engine of class
`0x120100`), the ASPEED BMC VGA (card0), a ConnectX-7 NIC, PCI class `0x120000` for the GPUs.
`amd-smi static` is not recorded (the product table names the GPUs).

Expected: 8 accelerators, vendor `amd`, `AMD Instinct MI300X`, arch `gfx942`, 196608 MiB from
the product table (196592 MiB from rocm-smi when usage is requested), driver `6.10.5`, runtime
`rocm 7.0.2`, UUIDs from amd-smi; nothing from vendor `1022`.
""")


# ---------------------------------------------------------------------------------------------
# Hygon
# ---------------------------------------------------------------------------------------------

HYGON_CHIPSET = (  # device, class: Hygon CPU/chipset functions under 1d94 (names in pci.ids)
    ("1450", "060000"), ("1451", "080600"), ("1452", "060000"), ("1453", "060400"), ("1454", "060400"),
    ("1455", "130000"), ("1456", "108000"), ("145a", "130000"), ("145f", "0c0330"), ("1460", "060000"),
    ("1461", "060000"), ("1462", "060000"), ("1463", "060000"), ("1464", "060000"), ("1468", "108000"),
    ("7901", "010601"), ("790b", "0c0500"), ("790e", "060100"), ("14ab", "020000"),
)


def hygon_k100ai_8dcu() -> None:
    s = Snap("hygon-k100ai-8dcu")
    model = "Hygon C86 7390 32-core Processor"
    s.host(hostname="dcu-node-03", kernel="5.15.0-113-generic", arch="x86_64", os_release=UBUNTU_2204,
           cpus=128, cpu_model=model, cpuinfo=x86_cpuinfo("HygonGenuine", model, 128, HYGON_FLAGS), mem_gib=512,
           modules=["hycu", "hydrm_ttm_helper", "hyttm", "hysched", "ast", "igb"])
    for i, (dev, cls) in enumerate(HYGON_CHIPSET):
        s.pci(f"0000:00:{i + 1:02x}.0" if i < 14 else f"0000:40:{i - 13:02x}.0", "1d94", dev, cls,
              numa=0, driver={"108000": "ccp", "0c0330": "xhci_hcd", "010601": "ahci"}.get(cls))
    s.pci("0000:03:00.0", "1a03", "2000", "030000", numa=0, driver="ast", files={"drm/card0/dev": "226:0\n"})
    buses = dict(re.findall(r"HCU\[(\d+)\]\s*:\s*PCI Bus:\s*(\S+)", sample("hy-smi_showbus_8hcu.txt")))
    for card, (_idx, bdf) in enumerate(sorted(buses.items(), key=lambda kv: kv[1]), start=1):
        s.pci(bdf, "1d94", "6210", "038000", numa=0 if bdf < "0000:80" else 1, driver="hycu",
              files={f"drm/card{card}/dev": f"226:{card}\n", f"drm/renderD{127 + card}/dev": f"226:{127 + card}\n"})
    s.dev("kfd", "mkfd", *[f"dri/card{i}" for i in range(9)], *[f"dri/renderD{128 + i}" for i in range(8)])
    s.file("sys/module/hycu/version", "6.3.8-V1.9.2\n")
    s.file("opt/dtk/.info/version", "24.04.3\n")
    s.file("opt/hyhal/.info/version", "1.9.2\n")
    s.tool(["hy-smi"], "hy-smi.txt", sample("hy-smi_hcu_8card_decenc_rows.txt"))
    s.tool(["hy-smi", "--showbus"], "hy-smi-showbus.txt", sample("hy-smi_showbus_8hcu.txt"))
    one = json.loads(sample("rocm-smi_json_hygon_dcu_dtk24.04.3.gpustack.json"))["card0"]
    cards = {f"card{i}": {**one, "PCI Bus": buses[str(i)], "Unique ID": f"7100fa88669040{i:02x}"} for i in range(8)}
    s.tool(["rocm-smi", "--showproductname", "--showbus", "--showmeminfo", "vram", "--showuse", "--showtemp",
            "--showpower", "--json"], "rocm-smi.json", json.dumps(cards, indent=2) + "\n")
    s.finish("""
# Node fixture: 2 × Hygon C86 7390 server with 8 × Hygon K100_AI DCUs (composed)

**Real parts:** `tool-output/hy-smi.txt` is the real 8-HCU listing
`tests/fixtures/tool-samples/hy-smi_hcu_8card_decenc_rows.txt` and `hy-smi-showbus.txt` the
real `hy-smi_showbus_8hcu.txt`, both verbatim (HCU naming; bus ids 05, 2b, 14, 1a, 86, b8, c0,
9e: hy-smi numbering does not follow PCI order). `rocm-smi.json` repeats the real DTK 24.04.3
card of `rocm-smi_json_hygon_dcu_dtk24.04.3.gpustack.json` (Device ID `0x6210`, `vram Total
Memory (MiB)` 65520, anonymised `Card Series`) for the 8 DCUs, adding `PCI Bus` and a distinct
`Unique ID`. DTK `24.04.3` is the real version of that capture.

**Composed:** PCI `1d94:6210` (the id of Hygon's docs and that capture; pci.ids says `6211`),
class `0x038000` (display controller, unverified), the DRM numbering, the `hycu` version, the
host (128 threads, 512 GiB, Ubuntu 22.04) and its **Hygon chipset functions, which share vendor
id `1d94`**: root complex, IOMMU, GPP bridges, PSP/CCP and NTB CCP (class `0x108000`), dummy
functions (class `0x130000`), data fabric, USB, SATA/SMBus/LPC, a Hygon NIC. None is a DCU.

Expected: 8 accelerators, vendor `hygon`, `Hygon K100_AI`, arch `gfx928`, 65520 MiB (rocm-smi;
65536 from the table without it), indices = hy-smi HCU numbers matched by bus id, driver
`6.3.8-V1.9.2` (/sys/module/hycu/version), runtime `dtk 24.04.3`.
""")


# ---------------------------------------------------------------------------------------------
# Intel Gaudi
# ---------------------------------------------------------------------------------------------

GAUDI2 = [  # index, bdf, module id (index->module pairs of the real hl-smi -Q sample), numa
    (0, "0000:19:00.0", 5, 0), (1, "0000:1a:00.0", 4, 0), (2, "0000:33:00.0", 7, 0), (3, "0000:34:00.0", 6, 0),
    (4, "0000:9a:00.0", 2, 1), (5, "0000:9b:00.0", 3, 1), (6, "0000:b3:00.0", 0, 1), (7, "0000:b4:00.0", 1, 1),
]


def hl_smi_8() -> str:
    """The real Gaudi2 `hl-smi` (1.15.1, one card) with the card block repeated for 8 cards."""
    real = sample("hl-smi_gaudi2_1.15.1_1card.txt").splitlines()
    head, tail = real[:7], real[10:]
    sep = real[9]
    body = []
    for idx, bdf, _, _ in GAUDI2:
        body.append(f"|   {idx}  HL-225              N/A  | {bdf}     N/A |                   0  |")
        body.append(f"| N/A   {29 + idx % 4}C   N/A    {93 + idx}W / 600W |    768MiB / 98304MiB |"
                    "     0%           N/A |")
        body.append(sep)
    return "\n".join(head + body + tail) + "\n"


def gaudi2_8hpu() -> None:
    s = Snap("gaudi2-8hpu")
    model = "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz"
    s.host(hostname="gaudi2-node-01", kernel="5.15.0-122-generic", arch="x86_64", os_release=UBUNTU_2204,
           cpus=160, cpu_model=model, cpuinfo=x86_cpuinfo("GenuineIntel", model, 160, INTEL_FLAGS), mem_gib=1024,
           modules=["habanalabs", "habanalabs_ib", "habanalabs_cn", "habanalabs_en", "ast", "ice"])
    s.pci("0000:00:00.0", "8086", "09a2", "060000", numa=0)
    s.pci("0000:02:00.0", "1a03", "2000", "030000", numa=0, driver="ast")
    for idx, bdf, module, numa in GAUDI2:
        s.pci(bdf, "1da3", "1020", "120000", numa=numa, driver="habanalabs",
              files={f"accel/accel{idx}/dev": f"261:{idx}\n", "module_id": f"{module}\n"})
    s.dev(*[f"accel/accel{i}" for i in range(8)], *[f"accel/accel_controlD{i}" for i in range(8)])
    s.file("sys/module/habanalabs/version", "1.15.1-62f612b\n")
    s.tool(["hl-smi"], "hl-smi.txt", hl_smi_8())
    s.tool(["hl-smi", "-Q", "index,module_id,bus_id", "-f", "csv,noheader"], "hl-smi-Q.csv",
           "".join(f"{idx}, {module}, {bdf}\n" for idx, bdf, module, _ in GAUDI2))
    s.finish("""
# Node fixture: Gaudi2 server, 8 × HL-225 (composed)

**Real parts:** `tool-output/hl-smi.txt` keeps the exact layout of the real
`tests/fixtures/tool-samples/hl-smi_gaudi2_1.15.1_1card.txt` (banner `HL-SMI Version:
hl-1.15.1-fw-49.0.0.0`, `Driver Version: 1.15.1-62f612b`, card 0 at `0000:19:00.0` with
98304 MiB); the card block is repeated for cards 1-7 with composed bus ids. The index -> module
id pairs of `hl-smi-Q.csv` are those of the real `hl-smi_Q_index_module_id_csv.txt` (0->5,
1->4, 2->7, 3->6, 4->2, 6->0), extended with 5->3 and 7->1, printed with `bus_id` and `noheader`.

**Composed:** bus ids 1-7, PCI `1da3:1020` class `0x120000`, the `accel/accelN` sysfs entries
and `module_id` attributes, `/dev/accel/*`, `/sys/module/habanalabs/version`, the host (2 × Xeon
8380, 160 threads, 1 TiB, Ubuntu 22.04).

Expected: 8 accelerators, vendor `gaudi`, `Intel Gaudi2 (HL-225)`, 98304 MiB, driver
`1.15.1-62f612b`, runtime `gaudi 1.15.1`, module ids (physical_id) as above.
""")


# ---------------------------------------------------------------------------------------------
# Kunlunxin
# ---------------------------------------------------------------------------------------------

def kunlunxin_p800_8xpu() -> None:
    s = Snap("kunlunxin-p800-8xpu")
    model = "Intel(R) Xeon(R) Platinum 8468V"
    s.host(hostname="p800-node-01", kernel="5.15.0-105-generic", arch="x86_64", os_release=UBUNTU_2204,
           cpus=192, cpu_model=model, cpuinfo=x86_cpuinfo("GenuineIntel", model, 192, INTEL_FLAGS), mem_gib=2048,
           modules=["kunlun", "ast", "mlx5_core"])
    s.pci("0000:00:00.0", "8086", "09a2", "060000", numa=0)
    s.pci("0000:02:00.0", "1a03", "2000", "030000", numa=0, driver="ast")
    text = sample("xpu-smi_p800_8card_5.0.21.21.txt")
    bdfs = re.findall(r"\| (0{8}:[0-9A-F]{2}:00\.0) N/A", text)
    for i, bus in enumerate(bdfs):
        bdf = "0000:" + bus[9:].lower()
        s.pci(bdf, "1d22", "3688", "120000", numa=0 if i < 4 else 1, driver="kunlun")
    s.pci("0000:c1:00.0", "1d22", "1380", "018000", numa=1)   # Baidu storage function: not an XPU
    s.dev(*[f"xpu{i}" for i in range(8)], "xpuctrl")
    s.file("sys/module/kunlun/version", "5.0.21.21\n")
    s.tool(["xpu-smi"], "xpu-smi.txt", text)
    s.finish("""
# Node fixture: 8 × Kunlunxin P800 OAM (composed host around a real listing)

**Real parts:** `tool-output/xpu-smi.txt` is the real 8-card listing
`tests/fixtures/tool-samples/xpu-smi_p800_8card_5.0.21.21.txt`, verbatim (Driver Version
5.0.21.21, XPU-RT Version 5.0.21, `P800 OAM`, 98304 MiB, bus ids 03, 05, 63, 65, 83, 85, A3,
A5 with 8-digit domains).

**Composed:** PCI `1d22:3688` (the P800 id from one community script, unverified) class
`0x120000`, a Baidu `1d22:1380` storage function (class `0x018000`) that must not be reported,
`/dev/xpu0-7` + `/dev/xpuctrl`, module `kunlun` and its version file, the host (Xeon 8468V,
192 threads, 2 TiB, Ubuntu 22.04). `xpu-smi -q` is not recorded (no UUIDs).

Expected: 8 accelerators, vendor `kunlunxin`, `Kunlunxin P800 OAM`, variant `p800`,
98304 MiB, driver `5.0.21.21`, runtime `xpu 5.0.21`.
""")


# ---------------------------------------------------------------------------------------------
# NVIDIA-bearing tricky nodes (NVIDIA parts reuse the real h200-1gpu capture's formats)
# ---------------------------------------------------------------------------------------------

def nvidia_xml(gpus: list[tuple[str, str, int]]) -> str:
    """The real `nvidia-smi -q -x` of h200-1gpu with its <gpu> element repeated per (bdf, uuid, minor)."""
    xml = (H200 / "tool-output" / "nvidia-smi-q.xml").read_text()
    start, end = xml.index("\t<gpu id="), xml.index("</gpu>") + len("</gpu>\n")
    gpu = xml[start:end]
    out = []
    for bdf, uuid, minor in gpus:
        bus, dev = bdf[5:7], bdf[8:10]
        g = gpu.replace('id="00000000:00:06.0"', f'id="0000{bdf}"')
        g = g.replace("<pci_bus_id>00000000:00:06.0</pci_bus_id>", f"<pci_bus_id>0000{bdf.upper()}</pci_bus_id>")
        g = g.replace("<pci_bus>00</pci_bus>", f"<pci_bus>{bus.upper()}</pci_bus>")
        g = g.replace("<pci_device>06</pci_device>", f"<pci_device>{dev.upper()}</pci_device>")
        g = g.replace("GPU-bd03a26d-5ee1-ab87-649f-69cee0dfcd01", uuid)
        g = g.replace("<minor_number>0</minor_number>", f"<minor_number>{minor}</minor_number>")
        out.append(g)
    xml = xml[:start] + "".join(out) + xml[end:]
    return xml.replace("<attached_gpus>1</attached_gpus>", f"<attached_gpus>{len(gpus)}</attached_gpus>")


def nvidia_parts(s: Snap, gpus: list[tuple[str, str, int, int]]) -> None:
    """H200s as in the real capture: PCI 10de:2335, /proc/driver/nvidia, nvidia-smi -q -x."""
    info = (H200 / "root/proc/driver/nvidia/gpus/0000:00:06.0/information").read_text()
    for bdf, uuid, minor, numa in gpus:
        s.pci(bdf, "10de", "2335", "030200", sub=("10de", "18bf"), numa=numa, driver="nvidia")
        s.file(f"proc/driver/nvidia/gpus/{bdf}/information",
               info.replace("GPU-bd03a26d-5ee1-ab87-649f-69cee0dfcd01", uuid)
                   .replace("0000:00:06.0", bdf).replace("Device Minor: \t 0", f"Device Minor: \t {minor}"))
        s.dev(f"nvidia{minor}")
    s.dev("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
    s.file("proc/driver/nvidia/version", (H200 / "root/proc/driver/nvidia/version").read_text())
    s.file("sys/module/nvidia/version", (H200 / "root/sys/module/nvidia/version").read_text())
    s.tool(["nvidia-smi", "-q", "-x"], "nvidia-smi-q.xml", nvidia_xml([(b, u, m) for b, u, m, _ in gpus]))


def nvidia_bmc_huawei_vga() -> None:
    s = Snap("nvidia-bmc-huawei-vga")
    model = "Intel(R) Xeon(R) Platinum 8480+"
    s.host(hostname="h200-hw-01", kernel="6.8.0-45-generic", arch="x86_64",
           os_release=UBUNTU_2204.replace("22.04.5 LTS", "24.04.3 LTS").replace('"22.04"', '"24.04"')
           .replace("(Jammy Jellyfish)", "(Noble Numbat)"),
           cpus=224, cpu_model=model, cpuinfo=x86_cpuinfo("GenuineIntel", model, 224, INTEL_FLAGS), mem_gib=2048,
           modules=["nvidia_uvm", "nvidia", "hibmc_drm", "hinic", "megaraid_sas"])
    s.pci("0000:00:00.0", "8086", "09a2", "060000", numa=0)
    s.pci("0000:03:00.0", "19e5", "1711", "030000", sub=("19e5", "0000"), numa=0, driver="hibmc-drm",
          files={"drm/card0/dev": "226:0\n"})
    s.pci("0000:31:00.0", "19e5", "1822", "020000", sub=("19e5", "d129"), numa=0, driver="hinic")
    s.pci("0000:31:00.1", "19e5", "1822", "020000", sub=("19e5", "d129"), numa=0, driver="hinic")
    s.pci("0000:3a:00.0", "19e5", "3758", "010400", sub=("19e5", "0185"), numa=0, driver="hiraid")
    nvidia_parts(s, [("0000:18:00.0", "GPU-6f2c1a84-03d5-4e7b-9a61-2b8d5c0e7f13", 0, 0),
                     ("0000:9a:00.0", "GPU-c41e9b27-8a0f-4d36-b5c2-7e19d3a6f048", 1, 1)])
    s.dev("dri/card0")
    s.finish("""
# Node fixture: 2 × NVIDIA H200 in a Huawei-built server (Huawei BMC VGA, NIC, RAID) (composed)

**Real parts:** the NVIDIA pieces reuse the real capture `shared/fixtures/nodes/h200-1gpu`:
`tool-output/nvidia-smi-q.xml` is its `nvidia-smi -q -x` with the `<gpu>` element repeated for
two GPUs (bus id, UUID and minor number changed), `/proc/driver/nvidia/version`,
`/sys/module/nvidia/version` (580.159.04) and the per-GPU `information` files likewise.

**Composed:** bus ids and UUIDs of the GPUs; the Huawei functions: iBMC VGA **`19e5:1711`**
(class `0x030000`, driver `hibmc-drm`, DRM card0), a Hi1822 NIC **`19e5:1822`** (two functions,
class `0x020000`) and an SP686C RAID `19e5:3758` (class `0x010400`); no Ascend modules,
`/dev/davinci*` or npu-smi. Host: 2 × Xeon 8480+, 224 threads, 2 TiB, Ubuntu 24.04.

Expected: exactly 2 accelerators, both `nvidia` `NVIDIA H200`; no `ascend` device, and the
Ascend probe finds no NPU (its PCI step sees the Huawei functions and claims none).
""")


def mixed_nvidia_ascend() -> None:
    s = Snap("mixed-nvidia-ascend")
    model = "Intel(R) Xeon(R) Gold 6330 CPU @ 2.00GHz"
    s.host(hostname="mixed-01", kernel="5.15.0-119-generic", arch="x86_64", os_release=UBUNTU_2204,
           cpus=112, cpu_model=model, cpuinfo=x86_cpuinfo("GenuineIntel", model, 112, INTEL_FLAGS), mem_gib=1024,
           modules=["nvidia_uvm", "nvidia"] + ASCEND_MODULES + ["ast"])
    s.pci("0000:00:00.0", "8086", "09a2", "060000", numa=0)
    s.pci("0000:02:00.0", "1a03", "2000", "030000", numa=0, driver="ast")
    nvidia_parts(s, [("0000:00:06.0", "GPU-bd03a26d-5ee1-ab87-649f-69cee0dfcd01", 0, 0)])
    s.pci("0000:82:00.0", "19e5", "d500", "120000", sub=("0200", "0100"), numa=1, driver="devdrv_device_driver")
    s.pci("0000:89:00.0", "19e5", "d500", "120000", sub=("0200", "0100"), numa=1, driver="devdrv_device_driver")
    s.dev("davinci0", "davinci1", "davinci_manager", "devmm_svm", "hisi_hdc")
    s.file("usr/local/Ascend/driver/version.info", DRIVER_VERSION_INFO.format(v="25.2.0"))
    s.tool(["npu-smi", "info"], "npu-smi-info.txt", sample("npu-smi_info_310P3_2card.txt"))
    s.finish("""
# Node fixture: one NVIDIA H200 and two Ascend 310P3 (Atlas 300I Pro) in one x86 server (composed)

**Real parts:** the NVIDIA H200 is the real `shared/fixtures/nodes/h200-1gpu` GPU (same bus id
`0000:00:06.0`, UUID, `nvidia-smi -q -x`, `/proc/driver/nvidia`); `tool-output/npu-smi-info.txt`
is the real `tests/fixtures/tool-samples/npu-smi_info_310P3_2card.txt` verbatim (bus ids
`0000:82:00.0`, `0000:89:00.0`).

**Composed:** the host (Xeon Gold 6330 ×2, 112 threads, 1 TiB, Ubuntu 22.04, ASPEED BMC),
PCI `19e5:d500` class `0x120000` subsystem `0200:0100` for the NPUs, Ascend modules,
`/dev/davinci0-1` and control nodes, `driver/version.info` 25.2.0; no CANN toolkit on the host
(runtime null) and no `npu-smi info -m` (logic ids from the `Device` column).

Expected: 3 accelerators: `nvidia` `NVIDIA H200` (driver 580.159.04, cuda 13.0) and two
`ascend` `Ascend 310P3` (21534 MiB, driver 25.2.0, variant `310p`).
""")


def main() -> None:
    ascend_910b_8npu()
    ascend_310p_2npu()
    amd_mi300x_8gpu_epyc()
    hygon_k100ai_8dcu()
    gaudi2_8hpu()
    kunlunxin_p800_8xpu()
    nvidia_bmc_huawei_vga()
    mixed_nvidia_ascend()


if __name__ == "__main__":
    main()
