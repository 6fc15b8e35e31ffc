"""Parsers of the AMD, Hygon, Ascend, Gaudi and Kunlunxin tools over every real sample.

Each sample is a verbatim public output (tests/fixtures/tool-samples/README.md names the
source); the expected values below were read off the sample text by hand.
"""

from __future__ import annotations

import pytest
from v1support import sample

from chip_drivers.amd import parse_amd_smi_list, parse_amd_smi_static, parse_rocm_smi_json, parse_smi_concise
from chip_drivers.ascend import parse_npu_smi_info, parse_npu_smi_mapping, variant_from_name
from chip_drivers.base import ProbeFailure
from chip_drivers.gaudi import parse_hl_smi, synapse_version
from chip_drivers.hygon import parse_hy_smi_showbus
from chip_drivers.kunlunxin import is_intel_xpu_smi, parse_xpu_smi, parse_xpu_smi_q
from chip_drivers.smi_table import parse_csv_query

GARBAGE = "Segmentation fault (core dumped)\n\x00\x01 garbled ###\n"

# ---- Ascend npu-smi ---------------------------------------------------------------------------

NPU_INFO = {
    # file: (banner version, [(npu, chip, name, bus, memory total, kind, health, device col)])
    "npu-smi_info_910B3_2card_25.3.rc1_with_procs.txt": ("25.3.rc1", [
        (0, 0, "910B3", "0000:c1:00.0", 65536, "HBM", "ok", None),
        (1, 0, "910B3", "0000:c2:00.0", 65536, "HBM", "ok", None)]),
    "npu-smi_info_910B3_4of8_24.1.rc1.txt": ("24.1.rc1.b030", [
        (0, 0, "910B3", "0000:c1:00.0", 65536, "HBM", "ok", None),
        (1, 0, "910B3", "0000:c2:00.0", 65536, "HBM", "ok", None),
        (2, 0, "910B3", "0000:81:00.0", 65536, "HBM", "ok", None)]),
    "npu-smi_info_910A_8card_24.1.RC2.gpustack.txt": ("24.1.RC2", [
        (i, 0, "xxx", bus, 32768, "HBM", "warning" if i in (3, 7) else "ok", None)
        for i, bus in enumerate(["0000:c1:00.0", "0000:81:00.0", "0000:41:00.0", "0000:01:00.0",
                                 "0000:c2:00.0", "0000:82:00.0", "0000:42:00.0", "0000:02:00.0"])]),
    "npu-smi_info_310P3_2card.txt": (None, [
        (0, 0, "310P3", "0000:82:00.0", 21534, "DDR", "ok", 0),
        (1, 0, "310P3", "0000:89:00.0", 21534, "DDR", "ok", 1)]),
    "npu-smi_info_310P3_ddr_no_hbm_fixture.txt": (None, [
        (0, 0, "310P3", "0000:c1:00.0", 21504, "DDR", "ok", 0)]),
    "npu-smi_info_310_21.0.4.gpustack.txt": ("21.0.4.B030", [
        (6, c, "310", f"0000:{b}:00.0", 8192, "DDR", "ok", 3 + c) for c, b in enumerate(["89", "8a", "8b", "8c"])]),
}


@pytest.mark.parametrize("name", sorted(NPU_INFO))
def test_npu_smi_info_samples(name):
    version, expected = NPU_INFO[name]
    info = parse_npu_smi_info(sample(name))
    assert info.version == version
    got = [(c.npu_id, c.chip_id, c.name, c.bus_id, c.memory_total_mib, c.memory_kind, c.health, c.device_id)
           for c in info.chips]
    assert got == expected


def test_npu_smi_usage_fields_and_process_table_ignored():
    info = parse_npu_smi_info(sample("npu-smi_info_910B3_2card_25.3.rc1_with_procs.txt"))
    c0 = info.chips[0]
    assert (c0.power_w, c0.temperature_c, c0.aicore_pct, c0.memory_used_mib) == (90.4, 32.0, 0.0, 41697)
    # the 910A sample's process table repeats "NPU Chip" rows: none may become a chip
    assert len(parse_npu_smi_info(sample("npu-smi_info_910A_8card_24.1.RC2.gpustack.txt")).chips) == 8
    # 910A: DDR memory 15137 MB beside 32768 MB HBM -> HBM is the device memory
    c310 = parse_npu_smi_info(sample("npu-smi_info_310_21.0.4.gpustack.txt")).chips[0]
    assert (c310.power_w, c310.temperature_c, c310.memory_used_mib) == (12.8, 73.0, 2703)


NPU_MAP = {
    "npu-smi_info-m_910B3_2card.txt": [(0, 0, 0, "Ascend 910B3"), (1, 0, 1, "Ascend 910B3")],
    "npu-smi_info-m_910A_8card.gpustack.txt": [(i, 0, i, "Ascend 910A") for i in range(8)],
    # the MCU row (logic id "-") is dropped
    "npu-smi_info-m_310.gpustack.txt": [(6, c, c, "MiniD") for c in range(4)],
}


@pytest.mark.parametrize("name", sorted(NPU_MAP))
def test_npu_smi_mapping_samples(name):
    rows = parse_npu_smi_mapping(sample(name))
    assert [(r.npu_id, r.chip_id, r.logic_id, r.name) for r in rows] == NPU_MAP[name]
    assert all(r.phy_id is None for r in rows)


def test_npu_smi_mapping_phy_id_column():
    # Ascend 950 / A3 layouts add a Chip Phy-ID column (chips.md); built from the real -m layout.
    text = ("NPU ID    Chip ID    Chip Logic ID    Chip Phy-ID    Chip Name\n"
            "0         0          0                0              Ascend 910_9392\n"
            "0         1          1                1              Ascend 910_9392\n"
            "1         0          2                3              Ascend 910_9392\n")
    rows = parse_npu_smi_mapping(text)
    assert [(r.npu_id, r.chip_id, r.logic_id, r.phy_id) for r in rows] == [(0, 0, 0, 0), (0, 1, 1, 1), (1, 0, 2, 3)]
    assert variant_from_name(rows[0].name) == "a3"


@pytest.mark.parametrize("name, variant", [("910B3", "910b"), ("Ascend 910B1", "910b"), ("310P3", "310p"),
                                           ("910A", "910"), ("Ascend 910ProB", "910"), ("310", "310"),
                                           ("Ascend910_9391", "a3"), ("910C", "a3"), ("MiniD", None)])
def test_variant_from_name(name, variant):
    assert variant_from_name(name) == variant


@pytest.mark.parametrize("parser", [parse_npu_smi_info, parse_npu_smi_mapping])
def test_npu_smi_garbage(parser):
    with pytest.raises(ProbeFailure, match="npu-smi"):
        parser(GARBAGE)


# ---- AMD amd-smi / rocm-smi -------------------------------------------------------------------

def test_amd_smi_list_mi300x():
    devs = parse_amd_smi_list(sample("amd-smi_list_mi300x_first3.txt"))
    assert [(d.index, d.bus_id, d.extra["device_id"]) for d in devs] == [
        (0, "0000:05:00.0", "74a1"), (1, "0000:26:00.0", "74a1"), (2, "0000:46:00.0", "74a1")]
    assert devs[0].uuid == "afff74a1-0000-1000-8054-e92b0a5d57c8"


def test_amd_smi_list_mi210_extra_fields():
    devs = parse_amd_smi_list(sample("amd-smi_list_mi210_2card.txt"))
    assert [(d.index, d.bus_id, d.extra["device_id"], d.extra["kfd_id"], d.extra["node_id"]) for d in devs] == [
        (0, "0000:03:00.0", "740f", "22303", "2"), (1, "0000:83:00.0", "740f", "31706", "3")]


def test_amd_smi_static_asic():
    assert parse_amd_smi_static(sample("amd-smi_static_asic_mi308x_partial.txt")) == {
        0: {"name": "MI308X", "device_id": "74a2"}}


def test_amd_smi_static_vram_section():
    # the VRAM section layout of `amd-smi static` (nested like ASIC in the real sample)
    text = sample("amd-smi_static_asic_mi308x_partial.txt") + "    VRAM:\n        TYPE: HBM\n        SIZE: 196592 MB\n"
    assert parse_amd_smi_static(text)[0]["memory_mib"] == "196592"


def test_rocm_smi_json_amd_rx7800xt():
    devs, driver = parse_rocm_smi_json(sample("rocm-smi_json_rx7800xt.gpustack.json"))
    (d,) = devs
    assert (d.index, d.name, d.extra["device_id"], d.memory_mib) == (
        0, "Navi 32 [Radeon RX 7700 XT / 7800 XT]", "747e", 17163091968 // 2**20)
    assert "gfx" not in d.extra      # "gfx11001" is rocm-smi's mangled form, not a gfx target
    assert (d.usage.utilization_pct, d.usage.temperature_c, d.usage.power_w, d.usage.memory_used_mib) == (
        100.0, 45.0, 53.0, 11615076352 // 2**20)
    assert driver is None


def test_rocm_smi_json_hygon():
    devs, _ = parse_rocm_smi_json(sample("rocm-smi_json_hygon_dcu_dtk24.04.3.gpustack.json"))
    (d,) = devs
    assert (d.extra["device_id"], d.memory_mib, d.usage.memory_used_mib, d.usage.power_w) == ("6210", 65520, 2, 80.0)
    assert d.extra["vendor"].startswith("Chengdu Haiguang")


def test_rocm_smi_concise_layouts():
    legacy = parse_smi_concise(sample("rocm-smi_concise_mi250_8gcd.txt"), "rocm-smi")
    assert [d.index for d in legacy] == list(range(8))
    assert (legacy[0].usage.temperature_c, legacy[0].usage.power_w,
            legacy[0].usage.power_limit_w) == (39.0, 92.0, 560.0)
    assert legacy[1].usage.power_w is None                       # "N/A"
    new = parse_smi_concise(sample("rocm-smi_concise_mi50x4_rocm6.4.txt"), "rocm-smi")
    assert [(d.index, d.extra["device_id"], d.usage.temperature_c, d.usage.power_w) for d in new] == [
        (0, "66a1", 36.0, 22.0), (1, "66a1", 32.0, 17.0), (2, "66a1", 35.0, 19.0)]


@pytest.mark.parametrize("parser", [parse_amd_smi_list, parse_amd_smi_static])
def test_amd_smi_garbage(parser):
    with pytest.raises(ProbeFailure, match="amd-smi"):
        parser(GARBAGE)


def test_rocm_smi_garbage():
    with pytest.raises(ProbeFailure, match="rocm-smi"):
        parse_rocm_smi_json(GARBAGE)
    with pytest.raises(ProbeFailure, match="rocm-smi"):
        parse_rocm_smi_json('{"card0": ')
    with pytest.raises(ProbeFailure, match="rocm-smi"):
        parse_smi_concise(GARBAGE, "rocm-smi")


# ---- Hygon hy-smi ----------------------------------------------------------------------------

def test_hy_smi_listing():
    devs = parse_smi_concise(sample("hy-smi_hcu_8card_decenc_rows.txt"), "hy-smi")
    assert [d.index for d in devs] == list(range(8))
    assert [(d.usage.temperature_c, d.usage.power_w) for d in devs][:2] == [(51.0, 95.0), (50.0, 90.0)]
    assert all(d.usage.utilization_pct == 0.0 and d.extra["vram_pct"] == "0%" for d in devs)


def test_hy_smi_showbus():
    assert parse_hy_smi_showbus(sample("hy-smi_showbus_8hcu.txt")) == {
        0: "0000:05:00.0", 1: "0000:2b:00.0", 2: "0000:14:00.0", 3: "0000:1a:00.0",
        4: "0000:86:00.0", 5: "0000:b8:00.0", 6: "0000:c0:00.0", 7: "0000:9e:00.0"}


def test_hy_smi_garbage():
    with pytest.raises(ProbeFailure, match="hy-smi"):
        parse_smi_concise(GARBAGE, "hy-smi")
    with pytest.raises(ProbeFailure, match="hy-smi --showbus"):
        parse_hy_smi_showbus(GARBAGE)


# ---- Gaudi hl-smi ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, bus, driver, hl_version, temp", [
    ("hl-smi_gaudi2_1.15.1_1card.txt", "0000:19:00.0", "1.15.1-62f612b", "hl-1.15.1-fw-49.0.0.0", 29.0),
    ("hl-smi_gaudi2_1.20.0_nicdriver_card0.txt", "0000:9a:00.0", "1.19.1-6f47ddd", "hl-1.20.0-fw-58.1.1.1", 22.0),
])
def test_hl_smi_samples(name, bus, driver, hl_version, temp):
    listing = parse_hl_smi(sample(name))
    (d,) = listing.devices
    assert (d.index, d.name, d.bus_id, d.memory_mib) == (0, "HL-225", bus, 98304)
    assert listing.versions["Driver Version"] == driver
    assert listing.versions["HL-SMI Version"] == hl_version
    assert (d.usage.temperature_c, d.usage.power_limit_w, d.usage.memory_used_mib) == (temp, 600.0, 768)


def test_hl_smi_nic_driver_does_not_shadow_driver():
    versions = parse_hl_smi(sample("hl-smi_gaudi2_1.20.0_nicdriver_card0.txt")).versions
    assert versions["Nic Driver Version"] == "1.19.1-f071c23"
    assert synapse_version(versions["HL-SMI Version"]) == "1.20.0"


def test_hl_smi_query_csv_with_header():
    rows = parse_csv_query(sample("hl-smi_Q_index_module_id_csv.txt"), ("index", "module_id"), "hl-smi -Q")
    assert [(r["index"], r["module_id"]) for r in rows] == [("3", "6"), ("1", "4"), ("2", "7"),
                                                          ("0", "5"), ("4", "2"), ("6", "0")]


def test_hl_smi_garbage():
    with pytest.raises(ProbeFailure, match="hl-smi"):
        parse_hl_smi(GARBAGE)
    with pytest.raises(ProbeFailure, match="hl-smi -Q"):
        parse_csv_query(GARBAGE, ("index", "module_id", "bus_id"), "hl-smi -Q")


# ---- Kunlunxin xpu-smi -----------------------------------------------------------------------

def test_xpu_smi_p800_listing():
    listing = parse_xpu_smi(sample("xpu-smi_p800_8card_5.0.21.21.txt"))
    assert [d.bus_id for d in listing.devices] == [
        "0000:03:00.0", "0000:05:00.0", "0000:63:00.0", "0000:65:00.0",
        "0000:83:00.0", "0000:85:00.0", "0000:a3:00.0", "0000:a5:00.0"]
    assert {(d.name, d.memory_mib) for d in listing.devices} == {("P800 OAM", 98304)}
    assert [d.index for d in listing.devices] == list(range(8))
    assert listing.versions == {"Driver Version": "5.0.21.21", "XPU-RT Version": "5.0.21"}
    assert (listing.devices[1].usage.temperature_c, listing.devices[1].usage.power_w) == (41.0, 90.0)


def test_xpu_smi_q_partial():
    top, devices = parse_xpu_smi_q(sample("xpu-smi-q_p800_partial.txt"))
    assert top["Driver Version"] == "5.0.21.26"
    info = devices["0000:01:00.0"]
    assert (info["Product Name"], info["Product Brand"], info["XPU UUID"], info["Minor Number"]) == (
        "P800 PCIe", "KUNLUNXIN", "GPU-420716f2-9928-5108-a5b2-e6b7cf36b37c", "0")


# Intel's XPU Manager also installs `xpu-smi`; its help banner (public Intel docs) must not parse.
INTEL_XPU_SMI = """Intel(R) XPU System Management Interface -- v1.0
Intel(R) XPU System Management Interface provides the Intel data center GPU device info. \
It can also be used to update the firmware.

Supported devices:
  - Intel Data Center GPU

Usage: xpu-smi [Options]
  xpu-smi -v
  xpu-smi -h
  xpu-smi discovery
"""


def test_xpu_smi_intel_name_clash():
    assert is_intel_xpu_smi(INTEL_XPU_SMI)
    assert not is_intel_xpu_smi(sample("xpu-smi_p800_8card_5.0.21.21.txt"))
    with pytest.raises(ProbeFailure, match="Intel"):
        parse_xpu_smi(INTEL_XPU_SMI)


def test_xpu_smi_garbage():
    with pytest.raises(ProbeFailure, match="xpu-smi"):
        parse_xpu_smi(GARBAGE)
    with pytest.raises(ProbeFailure, match="xpu-smi -q"):
        parse_xpu_smi_q(GARBAGE)
