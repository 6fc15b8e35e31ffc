"""Running vendor CLIs and folding their listings into accelerators (detection layer c).

Shared by the AMD, Hygon, Ascend, Gaudi and Kunlunxin drivers. WHY one place: every vendor
tool is run the same way (through the host view, under a timeout, one ProbeStep per call;
"not installed" is not an error, a hang/non-zero exit/garbage is), and every listing is
matched to the PCI devices the same way (by bus id, never by position, because vendor
numbering does not follow PCI order). Parsers stay in the vendor modules.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, ProbeStep, Usage
from appliance.inventory.pci import normalize_bdf
from appliance.subproc import CommandResult
from chip_drivers.base import ProbeFailure


@dataclass
class ToolDevice:
    """One device as a vendor tool lists it (fields the tool did not print stay None)."""

    index: int | None = None
    bus_id: str | None = None
    name: str | None = None
    memory_mib: int | None = None
    uuid: str | None = None
    health: str | None = None           # ok / warning / error
    usage: Usage | None = None
    physical_id: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def run_tool(host: HostView, argv: list[str], *, timeout_s: float, steps: list[ProbeStep],
             required: bool = True) -> CommandResult | None:
    """Run one vendor command and record a step.

    Returns None when the tool is not installed (step result ``none``). A timeout or a
    non-zero exit raises :class:`ProbeFailure` when ``required``; otherwise the step is
    recorded as an error and None is returned (a secondary listing failing must not throw
    away what the primary listing gave).
    """
    start = time.monotonic()
    res = host.run(list(argv), timeout_s=timeout_s)
    seconds = round(res.seconds or (time.monotonic() - start), 4)
    name = " ".join(argv)
    if res.not_found:
        steps.append(ProbeStep(name=name, result="none", detail=f"{argv[0]} is not installed",
                               seconds=seconds))
        return None
    if not res.ok:
        detail = res.describe_failure()
        steps.append(ProbeStep(name=name, result="error", detail=detail, seconds=seconds))
        if required:
            raise ProbeFailure(detail)
        return None
    steps.append(ProbeStep(name=name, result="ok", seconds=seconds))
    return res


def resolve_tool(host: HostView, name: str, fallback_dirs: tuple[str, ...] = ()) -> str:
    """The argv[0] to use: the bare name when on PATH (and always on a snapshot or a live host
    with another root, whose commands are keyed/found by name), else an absolute path from
    ``fallback_dirs`` on this machine (hy-smi lives in /opt/hyhal/bin, rocm-smi in
    /opt/rocm/bin, often not on root's PATH)."""
    if not getattr(host, "native", False) or host.has_tool(name):
        return name
    for directory in fallback_dirs:
        candidate = f"{directory.rstrip('/')}/{name}"
        if host.exists(candidate):
            return candidate
    return name


def set_step_detail(steps: list[ProbeStep], detail: str) -> None:
    """Attach a summary ("8 device(s)") to the last step."""
    if steps:
        steps[-1].detail = detail if not steps[-1].detail else f"{steps[-1].detail}; {detail}"


# ---- small text helpers -----------------------------------------------------------------

_NUM_RE = re.compile(r"[-+]?\d+(?:\.\d+)?")
_BDF_RE = re.compile(r"\b(?:[0-9A-Fa-f]{4,8}:)?[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]\b")
_PAIR_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:MiB|MB|Mib)?\s*/\s*(\d+(?:\.\d+)?)\s*(?:MiB|MB|Mib)?")


def first_number(text: str | None) -> float | None:
    """The first number in a cell (``"93W"`` -> 93.0, ``"N/A"`` -> None)."""
    if not text:
        return None
    m = _NUM_RE.search(text)
    return float(m.group(0)) if m else None


def find_bdf(text: str) -> str | None:
    """A PCI address anywhere in ``text``, normalised to ``0000:c1:00.0``."""
    m = _BDF_RE.search(text)
    return normalize_bdf(m.group(0)) if m else None


def usage_pairs(text: str) -> list[tuple[int, int]]:
    """Every ``used / total`` pair in a cell, in order (``"768MiB / 98304MiB"``)."""
    return [(int(float(a)), int(float(b))) for a, b in _PAIR_RE.findall(text)]


def box_cells(line: str) -> list[str] | None:
    """Cells of a ``| a | b | c |`` table row (nvidia-smi style), or None for other lines."""
    line = line.rstrip()
    if not line.startswith("|") or not line.endswith("|") or set(line) <= set("|+-=: "):
        return None
    return [c.strip() for c in line[1:-1].split("|")]


def key_values(text: str, sep: str = "=") -> dict[str, str]:
    """``key=value`` lines (version.info, ascend_toolkit_install.info); first one wins."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        key = key.strip()
        if found and key and key not in out:
            out[key] = value.strip()
    return out


# ---- folding a listing into the PCI devices --------------------------------------------

def merge_listing(host: HostView, accs: list[Accelerator], listed: list[ToolDevice], *,
                  vendor_ids: tuple[str, ...], tool: str, usage: bool,
                  make_acc, apply) -> tuple[list[Accelerator], list[str]]:
    """Match listed devices to PCI devices by bus id and apply the tool's facts.

    ``apply(acc, td)`` copies vendor fields; ``make_acc(td, index)`` builds a device the
    PCI scan did not see. A listed device whose bus id is a PCI function in sysfs that
    this vendor did not claim (another vendor's, a chipset function) is skipped: the tool
    may list foreign devices (rocm-smi lists Hygon DCUs) and layer a has the last word.
    Devices that share a bus id (Ascend 310P Duo, A3: two chips behind one function) become
    one accelerator each. PCI devices the tool did not list are kept with a warning.
    Returns the new list (sorted by index) and notes for the step detail.
    """
    notes: list[str] = []
    by_bdf = {a.pci_bdf: a for a in accs if a.pci_bdf}
    used: dict[str, int] = {}
    result: list[Accelerator] = []
    unmatchable = 0
    for td in listed:
        bdf = normalize_bdf(td.bus_id) if td.bus_id else None
        acc = by_bdf.get(bdf) if bdf else None
        if acc is None:
            if not bdf and accs:
                unmatchable += 1
                continue
            if bdf and host.exists(f"/sys/bus/pci/devices/{bdf}"):
                vendor = (host.read_value(f"/sys/bus/pci/devices/{bdf}/vendor") or "").lower()
                vendor = vendor[2:] if vendor.startswith("0x") else vendor
                if vendor not in vendor_ids:
                    notes.append(f"skipped {bdf}: PCI vendor {vendor or '?'} is not ours")
                    continue
                notes.append(f"skipped {bdf}: not an accelerator by its PCI class")
                continue
            index = td.index if td.index is not None else len(result)
            acc = make_acc(td, index)
            acc.sources.setdefault("pci_bdf", tool)
            if bdf:
                acc.pci_bdf = bdf
        else:
            count = used.get(bdf, 0)
            used[bdf] = count + 1
            if count:
                acc = acc.model_copy(deep=True)
        if td.index is not None:
            acc.index = td.index
            acc.sources["index"] = tool
        apply(acc, td)
        if td.health:
            acc.health = td.health  # type: ignore[assignment]
            acc.sources["health"] = tool
        if usage and td.usage is not None:
            acc.usage = td.usage
        result.append(acc)
    missing = [a for a in accs if a.pci_bdf not in used]
    if unmatchable:
        notes.append(f"{unmatchable} listed device(s) without a bus id could not be matched to PCI")
    next_index = max([a.index for a in result], default=-1) + 1
    for acc in missing:
        acc.index = next_index
        next_index += 1
        if not unmatchable:   # only a listing with bus ids can say a device is absent
            acc.health = "warning"
            hint = f"{tool} does not list this device: check the driver (dmesg) and the card"
            if hint not in acc.hints:
                acc.hints.append(hint)
            notes.append(f"{acc.pci_bdf} not listed")
        result.append(acc)
    result.sort(key=lambda a: a.index)
    return result, notes


# ---- nvidia-smi-style box tables (hl-smi, xpu-smi) --------------------------------------

_VERSION_RE = re.compile(r"([\w-]+(?: [\w-]+)* Version):\s*(\S+)")
_DEVICE_ROW_RE = re.compile(r"^(\d+)\s+(.+?)\s+(\S+)$")
_WATTS_RE = re.compile(r"(\d+(?:\.\d+)?)\s*W\s*/\s*(\d+(?:\.\d+)?)\s*W")
_TEMP_RE = re.compile(r"^(\d+(?:\.\d+)?)C$")


@dataclass
class BoxListing:
    versions: dict[str, str]          # "Driver Version" -> "1.15.1-62f612b"
    devices: list[ToolDevice]
    saw_table: bool                   # a device-table header was seen


def parse_smi_box(text: str, index_label: str, tool: str) -> BoxListing:
    """The nvidia-smi-like layout of ``hl-smi`` and Kunlunxin's ``xpu-smi``.

    Banner rows carry ``... Version: X``; each device is a row ``N  Name  Persistence |
    Bus-Id Disp | ECC`` followed by ``Fan Temp Perf Pwr:Usage/Cap | used / total | Util ...``
    (and, for xpu-smi, an L3 row that is ignored). Usage always lands in ``usage``; the
    caller drops it when usage was not requested."""
    versions: dict[str, str] = {}
    devices: list[ToolDevice] = []
    saw_table = False
    current: ToolDevice | None = None
    row_in_device = 0
    for line in text.splitlines():
        if "Processes" in line:
            break
        cells = box_cells(line)
        if cells is None:
            continue
        if len(cells) == 1:
            for key, value in _VERSION_RE.findall(cells[0]):
                versions.setdefault(key, value)
            continue
        if cells[0].startswith(index_label) and "Name" in cells[0]:
            saw_table = True
            continue
        m = _DEVICE_ROW_RE.match(cells[0])
        bdf = find_bdf(cells[1]) if len(cells) > 1 else None
        if m and bdf:
            current = ToolDevice(index=int(m.group(1)), name=m.group(2), bus_id=bdf,
                                 usage=Usage(source=tool))
            devices.append(current)
            row_in_device = 1
            continue
        if current is None or row_in_device != 1 or len(cells) < 3:
            row_in_device += 1 if current is not None else 0
            continue
        row_in_device += 1
        usage = current.usage or Usage(source=tool)
        for tok in cells[0].split():
            t = _TEMP_RE.match(tok)
            if t:
                usage.temperature_c = float(t.group(1))
                break
        w = _WATTS_RE.search(cells[0])
        if w:
            usage.power_w, usage.power_limit_w = float(w.group(1)), float(w.group(2))
        pairs = usage_pairs(cells[1])
        if pairs:
            usage.memory_used_mib, current.memory_mib = pairs[0]
        util = re.search(r"(\d+(?:\.\d+)?)%", cells[2])
        if util:
            usage.utilization_pct = float(util.group(1))
        current.usage = usage
    if not saw_table and not devices:
        raise ProbeFailure(f"{tool}: output not recognised (no device table)")
    return BoxListing(versions=versions, devices=devices, saw_table=saw_table)


def parse_csv_query(text: str, fields: tuple[str, ...], tool: str) -> list[dict[str, str]]:
    """``--query``-style CSV (``3, 6`` per line), with or without the header line."""
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in line.split(",")]
        if [v.lower() for v in values] == [f.lower() for f in fields]:
            continue
        if len(values) != len(fields):
            raise ProbeFailure(f"{tool}: expected {len(fields)} columns, got {line.strip()!r}")
        rows.append(dict(zip(fields, values)))
    return rows
