"""Compose the node snapshots of issue 18 item 4 ("chip tables from sources"; run once, output committed).

Boxes whose accelerators detection must name from PCI alone, before any vendor driver or tool
is installed: a Kunlunxin R200 box (class ``0780``), an NVIDIA H20 141 GB box, a Hygon Z100 and
a Z100L box, a Gaudi2 HL-288 box. Nothing here is a capture: PCI ids, classes and subsystem ids
are those of the sources each README names, the hosts are composed in the layout of the real
capture tests/fixtures/nodes/h200-1gpu (helpers of make_vendor1_fixtures.py). No vendor tool
output is invented: ``tool-output/`` holds only ``uname -a`` and ``lscpu``. Re-run after
changing this script:

    python3 tests/vendors1/make_chip_table_fixtures.py
"""

from __future__ import annotations

from make_vendor1_fixtures import (
    HYGON_CHIPSET,
    HYGON_FLAGS,
    INTEL_FLAGS,
    UBUNTU_2204,
    Snap,
    x86_cpuinfo,
)

NO_TOOLS = ("No vendor driver is loaded and no vendor tool is installed: `tool-output/index.json` "
            "lists only `uname -a` and `lscpu`, so detection has PCI sysfs, `/proc` and the product "
            "table only. Written by `tests/vendors1/make_chip_table_fixtures.py`.")


def intel_host(s: Snap, hostname: str, cpus: int, mem_gib: int, modules: list[str],
               model: str = "Intel(R) Xeon(R) Platinum 8468") -> None:
    s.host(hostname=hostname, kernel="5.15.0-125-generic", arch="x86_64", os_release=UBUNTU_2204, cpus=cpus,
           cpu_model=model, cpuinfo=x86_cpuinfo("GenuineIntel", model, cpus, INTEL_FLAGS), mem_gib=mem_gib,
           modules=modules)
    s.pci("0000:00:00.0", "8086", "09a2", "060000", sub=("8086", "0000"), numa=0)
    s.pci("0000:02:00.0", "1a03", "2000", "030000", numa=0, driver="ast", files={"drm/card0/dev": "226:0\n"})
    s.dev("dri/card0")


# ---------------------------------------------------------------------------------------------
# Kunlunxin R200 (class 0780, subsystem 0002:0001)
# ---------------------------------------------------------------------------------------------

R200_BDFS = (("0000:01:00.0", 0), ("0000:81:00.0", 1))


def kunlunxin_r200() -> None:
    s = Snap("kunlunxin-r200-2xpu-nodriver")
    intel_host(s, "r200-node-01", 64, 512, ["ast", "igb", "nvme"])
    s.pci("0000:05:00.0", "8086", "1521", "020000", sub=("8086", "0001"), numa=0, driver="igb")
    for bdf, numa in R200_BDFS:
        s.pci(bdf, "1d22", "3684", "078000", sub=("0002", "0001"), numa=numa)
    s.finish(f"""
# Node fixture: two Kunlunxin R200 cards, no Kunlunxin driver installed (composed)

**Source of the PCI identity:** Kunlunxin's XRE install guide ("1.3 安装前检查"), whose
`lspci -d 1d22: -nv` of a box with one R200 and one K100 prints the R200 as
`01:00.0 0780: 1d22:3684 (rev 02)` with `Subsystem: 0002:0001` and explains: subsystem
`0002:0001` = the standard R200 card, no subsystem = a first-generation K100/K200 (which shows
class `1200`). Its SR-IOV table gives the R200 16 GB. So the two R200 here are `1d22:3684`,
class `0x078000` (other communication controller, not an accelerator class for other
vendors), subsystem `0002:0001`, at `0000:01:00.0` (NUMA 0, the guide's address) and
`0000:81:00.0` (NUMA 1), **no kernel driver bound**, no `kunlun` module, no `/dev/xpu*`.

**Composed:** the second card's address, the host (64 threads, 512 GiB, Ubuntu 22.04), its
host bridge, ASPEED BMC VGA (`/dev/dri/card0`) and Intel I350 NIC. {NO_TOOLS}

Expected: 2 accelerators, vendor `kunlunxin`, model `Kunlunxin R200`, 16384 MiB, arch `KL2`,
variant `kl2` (all from the product table, keyed by device and subsystem), `pci_class`
`078000`, `pci_subsystem_id` `0002:0001`, `driver_version` null, runtime null, health
`warning` with the hint to install the driver.
""")


# ---------------------------------------------------------------------------------------------
# NVIDIA H20 141 GB (10de:232c), no driver
# ---------------------------------------------------------------------------------------------

H20_BDFS = (("0000:18:00.0", 0), ("0000:2a:00.0", 0), ("0000:3a:00.0", 0), ("0000:5d:00.0", 0),
            ("0000:9a:00.0", 1), ("0000:ab:00.0", 1), ("0000:ba:00.0", 1), ("0000:db:00.0", 1))


def nvidia_h20_141g() -> None:
    s = Snap("nvidia-h20-141g-nodriver")
    intel_host(s, "h20-node-01", 192, 2048, ["ast", "mlx5_core", "nvme"])
    for bdf, numa in H20_BDFS:
        s.pci(bdf, "10de", "232c", "030200", sub=("10de", "0000"), numa=numa)
        nic = f"{bdf[:5]}{int(bdf[5:7], 16) + 1:02x}:00.0"   # a ConnectX-7 beside each GPU
        s.pci(nic, "15b3", "1021", "020000", sub=("15b3", "0041"), numa=numa, driver="mlx5_core")
    s.finish(f"""
# Node fixture: eight NVIDIA H20 141 GB (HBM3e), no NVIDIA driver installed (composed)

An installer's first look at a 2025-style DeepSeek appliance: eight `10de:232c` (pci.ids
2026.08.22: `GH100 [H20 HBM3e]`; issue 18: the 141 GB H20), class `0x030200`, with **no kernel
driver bound**, no `nvidia` module, no `/proc/driver/nvidia`, no `/dev/nvidia*`, no
`nvidia-smi`. Addresses and NUMA nodes follow an HGX-style 8-GPU layout; each GPU has a
Mellanox ConnectX-7 `15b3:1021` beside it.

**Composed:** everything (not a capture): the subsystem id `10de:0000` (the board's real
subsystem id is not known to this project), the addresses, the host (192 threads, 2 TiB,
Ubuntu 22.04), host bridge, ASPEED BMC VGA. {NO_TOOLS}

Expected: 8 accelerators, vendor `nvidia`, model `NVIDIA H20 141GB HBM3e`, 143771 MiB (the
H200's NVML figure for the same 141 GB HBM3e; not verified on an H20), compute capability
9.0, variant `h20`, all from the product table; `driver_version` null, runtime null, health
`warning` and the hint to install the driver.
""")


# ---------------------------------------------------------------------------------------------
# NVIDIA H100 80 GB (10de:2330) x 8, no driver: one of two nodes for a model across nodes
# ---------------------------------------------------------------------------------------------


def nvidia_h100_8gpu(name: str = "nvidia-h100-8gpu-nodriver", hostname: str = "h100-node-01") -> None:
    s = Snap(name)
    intel_host(s, hostname, 224, 2048, ["ast", "mlx5_core", "nvme"])
    for bdf, numa in H20_BDFS:  # the same HGX-style layout
        s.pci(bdf, "10de", "2330", "030200", sub=("10de", "16c1"), numa=numa)
        nic = f"{bdf[:5]}{int(bdf[5:7], 16) + 1:02x}:00.0"   # a ConnectX-7 beside each GPU
        s.pci(nic, "15b3", "1021", "020000", sub=("15b3", "0041"), numa=numa, driver="mlx5_core")
    s.finish(f"""
# Node fixture: eight NVIDIA H100 80 GB (HBM3, SXM5), no NVIDIA driver installed (composed)

One of the two boxes of a 16-GPU DeepSeek-V3 deployment (issue 17: a model across nodes): eight
`10de:2330` (pci.ids: `GH100 [H100 SXM5 80GB]`, subsystem `10de:16c1`), class `0x030200`, no
kernel driver bound, in the HGX-style layout of nvidia-h20-141g-nodriver, each with a Mellanox
ConnectX-7 `15b3:1021` (RoCE/InfiniBand) beside it. Eight of them hold 640 GB: DeepSeek-V3's
FP8 weights (about 625 GiB) do not fit one node, so the cluster plan spans two.

**Composed:** everything (not a capture): the addresses, the host (224 threads, 2 TiB, Ubuntu
22.04), host bridge, ASPEED BMC VGA. {NO_TOOLS}

Expected: 8 accelerators, vendor `nvidia`, model `NVIDIA H100 80GB HBM3`, 81559 MiB (the
product table's figure), compute capability 9.0, variant `h100`; `driver_version` null,
runtime null, health `warning` and the hint to install the driver.
""")


# ---------------------------------------------------------------------------------------------
# Hygon Z100 (1d94:54b7) and Z100L (1d94:55b7), no driver
# ---------------------------------------------------------------------------------------------

def hygon_host(s: Snap, hostname: str, cpus: int, mem_gib: int) -> None:
    model = "Hygon C86 7285 32-core Processor"
    s.host(hostname=hostname, kernel="5.15.0-113-generic", arch="x86_64", os_release=UBUNTU_2204, cpus=cpus,
           cpu_model=model, cpuinfo=x86_cpuinfo("HygonGenuine", model, cpus, HYGON_FLAGS), mem_gib=mem_gib,
           modules=["ast", "igb", "ccp"])
    for i, (dev, cls) in enumerate(HYGON_CHIPSET):
        s.pci(f"0000:00:{i + 1:02x}.0" if i < 14 else f"0000:40:{i - 13:02x}.0", "1d94", dev, cls,
              numa=0, driver={"108000": "ccp", "0c0330": "xhci_hcd", "010601": "ahci"}.get(cls))
    s.pci("0000:03:00.0", "1a03", "2000", "030000", numa=0, driver="ast", files={"drm/card0/dev": "226:0\n"})
    s.dev("dri/card0")


Z100_BDFS = (("0000:04:00.0", 0), ("0000:23:00.0", 0), ("0000:43:00.0", 1), ("0000:63:00.0", 1))
Z100L_BDFS = (("0000:04:00.0", 0), ("0000:0b:00.0", 0), ("0000:23:00.0", 0), ("0000:2b:00.0", 0),
              ("0000:43:00.0", 1), ("0000:4b:00.0", 1), ("0000:63:00.0", 1), ("0000:6b:00.0", 1))

HYGON_README = """
# Node fixture: {count} × Hygon {name} DCUs on a Hygon C86 host, no DCU driver installed (composed)

**Source of the PCI id:** Hygon's `hydcu` kernel driver header (`#define DEVICE_{macro}
0x{device}`, vendor `PCI_VENDOR_ID_HYGON 0x1d94`); pci.ids (2026.08.22) does not list it. The
DCUs are `1d94:{device}` at {where}, **no kernel driver bound**, no `hycu`/`hydcu` module, no
`/dev/kfd`, `/dev/mkfd` or DCU DRM nodes, no DTK.

**Composed:** the class `0x038000` (display controller, as in hygon-k100ai-8dcu; unverified for
the {name}), subsystem ids, addresses, the host (Hygon C86 7285, {cpus} threads, Ubuntu 22.04)
and its **Hygon chipset functions with the same vendor id `1d94`** (root complex, IOMMU, GPP
bridges, PSP/CCP, dummy functions, data fabric, USB, SATA/SMBus/LPC, a Hygon NIC), none of which
is a DCU; ASPEED BMC VGA. {no_tools}

Expected: {count} accelerators, vendor `hygon`, model `Hygon {name}`, 32768 MiB, arch and
compute capability `gfx906`, variant null (product table); `driver_version` null, runtime null,
health `warning` with the hint to install the driver.
"""


def hygon_z100(name: str, device: str, macro: str, bdfs: tuple[tuple[str, int], ...], cpus: int) -> None:
    s = Snap(f"hygon-{name.lower()}-{len(bdfs)}dcu-nodriver")
    hygon_host(s, f"{name.lower()}-node-01", cpus, 256)
    for bdf, numa in bdfs:
        s.pci(bdf, "1d94", device, "038000", numa=numa)
    s.finish(HYGON_README.format(count=len(bdfs), name=name, macro=macro, device=device, cpus=cpus,
                                 where=", ".join(f"`{b}`" for b, _ in bdfs), no_tools=NO_TOOLS))


# ---------------------------------------------------------------------------------------------
# Intel Gaudi2 HL-288 (1da3:1021, the PCIe card), no driver
# ---------------------------------------------------------------------------------------------

HL288_BDFS = (("0000:19:00.0", 0), ("0000:1a:00.0", 0), ("0000:33:00.0", 0), ("0000:34:00.0", 0),
              ("0000:9a:00.0", 1), ("0000:9b:00.0", 1), ("0000:b3:00.0", 1), ("0000:b4:00.0", 1))


def gaudi2_hl288() -> None:
    s = Snap("gaudi2-hl288-8hpu-nodriver")
    intel_host(s, "hl288-node-01", 128, 1024, ["ast", "ice", "nvme"],
               model="Intel(R) Xeon(R) Platinum 8480+")
    for bdf, numa in HL288_BDFS:
        s.pci(bdf, "1da3", "1021", "120000", numa=numa)
    s.finish(f"""
# Node fixture: eight Intel Gaudi2 HL-288 PCIe cards, no habanalabs driver installed (composed)

**Source of the PCI id:** the habanalabs driver's PCI id table (`PCI_IDS_GAUDI2_HL_288 0x1021`
in `habanalabs_drv.c`); pci.ids (2026.08.22) lists only `1020` for Gaudi2. Public Gaudi vLLM
launch scripts tell the platforms apart by `hl-smi` name: `HL-225` = Gaudi2 OAM, `HL-288` =
Gaudi2 PCIe. The cards are `1da3:1021`, class `0x120000`, **no kernel driver bound**, no
`habanalabs` module, no `/dev/accel`, no `accel/` sysfs entries or `module_id`.

**Composed:** subsystem ids, addresses (those of gaudi2-8hpu), the host (Xeon 8480+, 128
threads, 1 TiB, Ubuntu 22.04), host bridge, ASPEED BMC VGA. {NO_TOOLS}

Expected: 8 accelerators, vendor `gaudi`, model `Intel Gaudi2 PCIe (HL-288)`, 98304 MiB (the
Gaudi2's 96 GB, assumed equal to the HL-225's), arch and variant `gaudi2` (product table), no
`physical_id`, `driver_version` null, runtime null, health `warning` with the hint to install
the driver.
""")


def main() -> None:
    kunlunxin_r200()
    nvidia_h20_141g()
    nvidia_h100_8gpu()
    hygon_z100("Z100", "54b7", "Z100", Z100_BDFS, 64)
    hygon_z100("Z100L", "55b7", "Z100L", Z100L_BDFS, 128)
    gaudi2_hl288()


if __name__ == "__main__":
    main()
