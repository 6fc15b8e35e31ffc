"""Parsers of cnmon, mx-smi, mthreads-gmi and ixsmi over every real sample, and over garbage.

The samples in tests/fixtures/tool-samples/ are verbatim public outputs (see its README);
expected values below were read off those files by eye, not produced by the parsers.
"""

from __future__ import annotations

import pytest
from v2support import sample

from chip_drivers.base import ProbeFailure
from chip_drivers.cambricon import parse_cnmon
from chip_drivers.iluvatar import parse_ixsmi
from chip_drivers.metax import parse_mx_smi
from chip_drivers.mthreads import parse_mthreads_gmi


def test_cnmon_v5_mlu370_x8_two_cards():
    out = parse_cnmon(sample("cnmon_mlu370x8_v5.10.13.txt"))
    assert out["driver_version"] == "5.10.13"
    assert out["cnmon_version"] == "5.10.13"
    assert out["by_order"] is False
    devs = out["devices"]
    assert [d["index"] for d in devs] == [0, 1]
    assert [d["name"] for d in devs] == ["MLU370-X8", "MLU370-X8"]
    assert [d["bus_id"] for d in devs] == ["0000:39:00.0", "0000:3d:00.0"]  # "3D" normalized
    assert [d["memory_total_mib"] for d in devs] == [23374, 23374]
    assert [d["memory_used_mib"] for d in devs] == [0, 0]
    assert [d["temperature_c"] for d in devs] == [32.0, 39.0]
    assert [(d["power_w"], d["power_limit_w"]) for d in devs] == [(106.0, 250.0), (106.0, 250.0)]
    assert [d["utilization_pct"] for d in devs] == [0.0, 0.0]
    assert devs[0]["firmware"] == "v1.1.6"


def test_cnmon_v4_layout_without_bus_id_matches_by_order():
    # The v4 header (no Bus-Id column), made from the v5 sample by swapping that column.
    text = sample("cnmon_mlu370x8_v5.10.13.txt")
    text = text.replace("CNMON v5.10.13                                               Driver v5.10.13",
                        "CNMON v4.20.18                                                              ")
    text = text.replace("               Bus-Id |", "               Inited |")
    text = text.replace("         0000:39:00.0 |", "                   On |")
    text = text.replace("         0000:3D:00.0 |", "                   On |")
    out = parse_cnmon(text)
    assert out["driver_version"] is None
    assert out["by_order"] is True
    assert [d["bus_id"] for d in out["devices"]] == [None, None]
    assert [d["memory_total_mib"] for d in out["devices"]] == [23374, 23374]


def test_mx_smi_c550_in_a_pod():
    out = parse_mx_smi(sample("mx-smi_c550_2.1.12_1card.txt"))
    assert out["driver_version"] == "2.12.13"
    assert out["maca_version"] is None  # "MACA Version: unknown"
    assert out["smi_version"] == "2.1.12"
    assert out["attached"] == 1
    (dev,) = out["devices"]
    assert dev["index"] == 0
    assert dev["name"] == "MetaX C550"
    assert dev["bus_id"] == "0000:2a:00.0"
    assert (dev["memory_used_mib"], dev["memory_total_mib"]) == (858, 65536)
    assert dev["temperature_c"] == 34.0
    assert (dev["power_w"], dev["power_limit_w"]) == (97.0, None)  # "97W / NA"
    assert dev["utilization_pct"] == 0.0


def test_mx_smi_n260_with_persistence_column():
    out = parse_mx_smi(sample("mx-smi_n260_2.2.8_card0.txt"))
    assert out["driver_version"] == "3.0.11"
    assert out["maca_version"] == "3.1.0.14"
    assert out["attached"] == 2  # the sample shows card 0 of 2
    (dev,) = out["devices"]
    assert dev["name"] == "MetaX N260"  # not "MetaX N260 Off"
    assert dev["bus_id"] == "0000:01:00.0"
    assert (dev["memory_used_mib"], dev["memory_total_mib"]) == (666, 65536)
    assert dev["temperature_c"] == 37.0
    assert (dev["power_w"], dev["power_limit_w"]) == (29.0, 225.0)


def test_mthreads_gmi_s80():
    out = parse_mthreads_gmi(sample("mthreads-gmi_s80_1.14.0.txt"))
    assert out["driver_version"] == "2.7.0"
    assert out["gmi_version"] == "1.14.0"
    (dev,) = out["devices"]
    assert dev["index"] == 0
    assert dev["name"] == "MTT S80"
    assert dev["bus_id"] == "0000:04:00.0"  # from 00000000:04:00.0
    assert (dev["memory_used_mib"], dev["memory_total_mib"]) == (2, 16384)
    assert dev["utilization_pct"] == 0.0
    assert dev["temperature_c"] == 49.0
    assert dev["device_type"] == "Physical"


def test_mthreads_gmi_two_gpus():
    # Two blocks in the sample's layout (the second copied from the first, new id and bus).
    text = sample("mthreads-gmi_s80_1.14.0.txt")
    block = ("0    MTT S80        |00000000:04:00.0    |0%    2MiB(16384MiB)\n"
             "     Physical       |4x(16x)             |49C   YES            \n")
    second = ("1    MTT S80        |00000000:83:00.0    |17%   1024MiB(16384MiB)\n"
              "     Physical       |16x(16x)            |61C   YES            \n")
    assert block in text
    out = parse_mthreads_gmi(text.replace(block, block + "                                         |      N/A\n"
                                          + "+-------------------------------------------------------------+\n"
                                          + second))
    assert [d["bus_id"] for d in out["devices"]] == ["0000:04:00.0", "0000:83:00.0"]
    assert [d["utilization_pct"] for d in out["devices"]] == [0.0, 17.0]
    assert [d["temperature_c"] for d in out["devices"]] == [49.0, 61.0]
    assert out["devices"][1]["memory_used_mib"] == 1024


def test_ixsmi_bi_v150_two_cards():
    out = parse_ixsmi(sample("ixsmi_bi-v150_4.3.8_2card.txt"))
    assert out["driver_version"] == "4.3.8"
    assert out["ixml_version"] == "4.3.8"
    assert out["cuda_version"] == "10.2"
    devs = out["devices"]
    assert [d["name"] for d in devs] == ["Iluvatar BI-V150", "Iluvatar BI-V150"]
    assert [d["bus_id"] for d in devs] == ["0000:10:00.0", "0000:13:00.0"]
    assert [d["memory_total_mib"] for d in devs] == [32768, 32768]
    assert [d["memory_used_mib"] for d in devs] == [64, 64]
    assert [d["temperature_c"] for d in devs] == [40.0, 39.0]
    assert [(d["power_w"], d["power_limit_w"]) for d in devs] == [(None, None), (104.0, 350.0)]


def test_ixsmi_bi_v150s_in_a_container_stops_at_process_table():
    out = parse_ixsmi(sample("ixsmi_bi-v150s_4.0.0_container.txt"))
    assert out["driver_version"] == "4.1.0"
    assert out["ixml_version"] == "4.0.0"
    assert out["cuda_version"] is None  # "CUDA Version: N/A"
    (dev,) = out["devices"]
    assert dev["name"] == "Iluvatar BI-V150S"
    assert dev["bus_id"] == "0000:8a:00.0"
    assert (dev["memory_used_mib"], dev["memory_total_mib"]) == (114, 32768)


PARSERS = {
    "cnmon": parse_cnmon,
    "mx-smi": parse_mx_smi,
    "mthreads-gmi": parse_mthreads_gmi,
    "ixsmi": parse_ixsmi,
}
OWN_SAMPLE = {
    "cnmon": "cnmon_mlu370x8_v5.10.13.txt",
    "mx-smi": "mx-smi_n260_2.2.8_card0.txt",
    "mthreads-gmi": "mthreads-gmi_s80_1.14.0.txt",
    "ixsmi": "ixsmi_bi-v150_4.3.8_2card.txt",
}
GARBAGE = [
    "",
    "\x00\x01\x02 binary junk \xff",
    "Segmentation fault (core dumped)\n",
    "command not found\n",
    "Error: driver not loaded\n",
]


@pytest.mark.parametrize("tool", sorted(PARSERS))
@pytest.mark.parametrize("text", GARBAGE, ids=["empty", "binary", "segfault", "notfound", "error"])
def test_garbage_raises_probe_failure_naming_the_tool(tool, text):
    with pytest.raises(ProbeFailure) as exc:
        PARSERS[tool](text)
    assert tool in str(exc.value)


@pytest.mark.parametrize("tool", sorted(PARSERS))
def test_another_vendors_listing_is_not_mistaken_for_ours(tool):
    for other, name in OWN_SAMPLE.items():
        if other == tool:
            continue
        with pytest.raises(ProbeFailure):
            PARSERS[tool](sample(name))


@pytest.mark.parametrize("tool", sorted(PARSERS))
def test_truncated_device_row_raises(tool):
    text = sample(OWN_SAMPLE[tool])
    # cut the output in the middle of the first device's memory figures
    cut = text.index("MiB") - 2
    with pytest.raises(ProbeFailure):
        PARSERS[tool](text[:cut] + "\n| 0 ???\n")
