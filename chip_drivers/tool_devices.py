"""Folding a vendor tool's device listing into the accelerators found from PCI (layer c).

Every vendor CLI lists its devices in its own format, but what happens next is the same for
all of them, so it lives here once: each parser produces :class:`ToolDevice` records, and
:func:`merge_listing` matches them to the PCI devices of layers a and b. WHY by bus id and
never by position: vendor numbering does not follow PCI order (hy-smi, npu-smi), and PCI
sysfs (layer a) has the last word on what is an accelerator, so a tool that lists foreign
devices (DTK's rocm-smi lists Hygon DCUs on an AMD host) cannot add them. Matching by
position is used only for a tool that prints no bus ids at all (``cnmon`` v4).

What each vendor's tool is allowed to change on a device stays in the vendor module (the
``apply`` callback); :func:`tool_facts_win` is the common rule for the tools whose listing
is the best source of names, memory and driver version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Accelerator, Usage
from appliance.inventory.pci import normalize_bdf
from chip_drivers.base import add_step_detail


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


def tool_device(dev: dict, tool: str) -> ToolDevice:
    """A ToolDevice from a parser's plain dict (``index``, ``name``, ``bus_id``,
    ``memory_total_mib``, ``uuid`` and the usage fields: the parse results of cnmon, mx-smi,
    mthreads-gmi and ixsmi, kept as dicts because they are part of those parsers' API)."""
    return ToolDevice(
        index=dev["index"], bus_id=dev.get("bus_id"), name=dev.get("name"),
        memory_mib=int(dev["memory_total_mib"]) if dev.get("memory_total_mib") else None,
        uuid=dev.get("uuid"),
        usage=Usage(utilization_pct=dev.get("utilization_pct"), memory_used_mib=dev.get("memory_used_mib"),
                    temperature_c=dev.get("temperature_c"), power_w=dev.get("power_w"),
                    power_limit_w=dev.get("power_limit_w"), source=tool))


def tool_facts_win(driver, tool: str, driver_version: str | None):
    """An ``apply`` for :func:`merge_listing`: the tool's name, memory, UUID and driver version
    replace what layers a/b found (each recorded in ``acc.sources`` as ``tool``), a listed
    device is healthy, and a product the table does not know gets its ``variant`` from the
    tool's product word (``MetaX C550`` -> ``c550``)."""
    missing_hint = driver.missing_driver_hint()

    def apply(acc: Accelerator, td: ToolDevice) -> None:
        if td.name:
            acc.model = td.name
            acc.sources["model"] = tool
            if acc.variant is None and td.name.split():
                acc.variant = td.name.split()[-1].lower()
                acc.sources["variant"] = tool
        if td.memory_mib:
            acc.memory_mib = td.memory_mib
            acc.sources["memory_mib"] = tool
        if td.uuid:
            acc.uuid = td.uuid
            acc.sources["uuid"] = tool
        if driver_version:
            acc.driver_version = driver_version
            acc.sources["driver_version"] = tool
        acc.health = "ok"
        acc.hints = [h for h in acc.hints if h != missing_hint]

    return apply


def merge_tool_listing(driver, host: HostView, accs: list[Accelerator], parsed: dict, *, tool: str,
                       usage: bool, steps: list) -> list[Accelerator]:
    """The whole layer c merge for a tool whose listing is the best source of names, memory and
    driver version (cnmon, mx-smi, mthreads-gmi, ixsmi): ``parsed`` is the parser's dict
    (``devices``, ``driver_version``, optional ``by_order``); the device count and merge notes
    go in the tool's step; devices only the tool shows get ``driver.state`` (layer b)."""
    listed = [tool_device(d, tool) for d in parsed["devices"]]
    add_step_detail(steps, f"{len(listed)} device(s)")
    return merge_listing(driver, host, accs, listed, tool=tool, usage=usage, steps=steps, state=driver.state,
                         by_order=parsed.get("by_order", False),
                         apply=tool_facts_win(driver, tool, parsed["driver_version"]))


def new_device(driver, td: ToolDevice, index: int, *, tool: str, state=None) -> Accelerator:
    """An accelerator the PCI scan did not see (a container without PCI sysfs), named by the
    tool, with the driver state of layer b applied when ``state`` is given."""
    bdf = normalize_bdf(td.bus_id) if td.bus_id else None
    acc = Accelerator(vendor=driver.vendor, model=td.name or f"{driver.display_name} device", index=index,
                      backend=driver.backend, pci_bdf=bdf, sources={"pci_bdf": tool} if bdf else {})
    if state is not None:
        driver.apply_driver_state([acc], state)
    return acc


def merge_listing(driver, host: HostView, accs: list[Accelerator], listed: list[ToolDevice], *,
                  tool: str, usage: bool, steps: list, apply, make_acc=None, state=None,
                  by_order: bool = False) -> list[Accelerator]:
    """Match listed devices to PCI devices by bus id and apply the tool's facts.

    - ``apply(acc, td)`` copies the vendor's fields; the tool's index always wins (recorded
      in ``acc.sources``), and so do its health and, when ``usage``, its usage figures.
    - A listed device with no PCI match becomes a new accelerator (``make_acc(td, index)``,
      default :func:`new_device` with ``state``), unless its bus id is a PCI function that this driver did
      not claim (another vendor's, a chipset function): layer a has the last word.
    - Several listed devices on one bus id (Ascend 310P Duo, A3: two chips behind one
      function) become one accelerator each.
    - Listed devices without a bus id are matched by position when ``by_order``; otherwise,
      when PCI devices exist, they cannot be matched and are counted in a note.
    - PCI devices the tool does not list are kept after the listed ones (next free indices)
      and, when the listing had bus ids (so absence means something), flagged with a hint.

    Returns the new list, sorted by index; what was skipped or missing is noted in the
    tool's step (the last of ``steps``).
    """

    make_acc = make_acc or (lambda td, index: new_device(driver, td, index, tool=tool, state=state))
    notes: list[str] = []
    by_bdf = {a.pci_bdf: a for a in accs if a.pci_bdf}
    used: dict[str, int] = {}
    result: list[Accelerator] = []
    unmatchable = 0
    for pos, td in enumerate(listed):
        bdf = normalize_bdf(td.bus_id) if td.bus_id else None
        acc = by_bdf.get(bdf) if bdf else None
        if acc is None and not bdf and by_order and pos < len(accs):
            acc, bdf = accs[pos], accs[pos].pci_bdf
        if acc is None:
            if not bdf and accs and not by_order:
                unmatchable += 1
                continue
            if bdf and host.exists(f"/sys/bus/pci/devices/{bdf}"):
                vendor = (host.read_value(f"/sys/bus/pci/devices/{bdf}/vendor") or "").lower()
                vendor = vendor[2:] if vendor.startswith("0x") else vendor
                if vendor not in driver.pci_vendor_ids:
                    notes.append(f"skipped {bdf}: PCI vendor {vendor or '?'} is not ours")
                    continue
                notes.append(f"skipped {bdf}: not an accelerator by its PCI class")
                continue
            acc = make_acc(td, td.index if td.index is not None else len(result))
            if bdf:
                acc.pci_bdf = bdf
                acc.sources.setdefault("pci_bdf", tool)
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
            hint = (f"{tool} does not list {acc.pci_bdf}: check that the {driver.display_name} driver "
                    f"is bound to it (dmesg) and that the device is healthy")
            if hint not in acc.hints:
                acc.hints.append(hint)
            notes.append(f"{acc.pci_bdf} not listed")
        result.append(acc)
    result.sort(key=lambda a: a.index)
    add_step_detail(steps, "; ".join(notes))
    return result
