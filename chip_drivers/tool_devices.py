"""Folding a vendor tool's device list into the accelerators found in layers a and b.

The drivers for cnmon, mx-smi, mthreads-gmi and ixsmi all parse a listing into plain dicts
(``index``, ``name``, ``bus_id``, ``memory_total_mib``, usage fields) and then need the same
merge: match by PCI address, let the tool's numbering/name/memory win with their source
recorded, add devices the tool sees but sysfs does not (a container), and flag PCI
functions the tool does not list. Keeping that in one place keeps the four drivers' rules
identical.
"""

from __future__ import annotations

from appliance.inventory.models import Accelerator, Usage


def merge_tool_devices(driver, accs: list[Accelerator], devices: list[dict], *, tool: str, usage: bool,
                       driver_version: str | None, state=None, by_order: bool = False) -> list[Accelerator]:
    """Return the merged, index-sorted accelerator list (``accs`` objects are updated in place).

    - match: same normalized PCI address; or list position when the tool prints no bus ids;
    - the tool's ``index``, ``name``, ``memory_total_mib``, ``uuid`` and ``driver_version`` win,
      each recorded in ``acc.sources`` as ``tool``; a listed device is ``health="ok"``; a device
      the product table does not know gets its ``variant`` from the tool's product word;
    - a tool device without a PCI function becomes a new accelerator (layer b state applied);
    - a PCI function the tool does not list keeps its data, becomes ``warning`` with a hint,
      and gets the next free index;
    - ``usage`` fills :class:`Usage` from the tool's utilization/memory/temperature/power.
    """
    by_bdf = {a.pci_bdf: a for a in accs if a.pci_bdf}
    pairs: list[tuple[Accelerator | None, dict]] = []
    used: set[int] = set()
    for pos, dev in enumerate(devices):
        acc = by_bdf.get(dev.get("bus_id")) if dev.get("bus_id") else None
        if acc is None and by_order and pos < len(accs):
            acc = accs[pos]
        if acc is not None and id(acc) in used:
            acc = None  # the tool listed the same address twice: keep the second as its own device
        if acc is not None:
            used.add(id(acc))
        pairs.append((acc, dev))

    missing_hint = driver.missing_driver_hint()
    out: list[Accelerator] = []
    for acc, dev in pairs:
        if acc is None:
            acc = Accelerator(vendor=driver.vendor, model=dev["name"], index=dev["index"],
                              backend=driver.backend, pci_bdf=dev.get("bus_id"),
                              sources={"pci_bdf": tool} if dev.get("bus_id") else {})
            if state is not None:
                driver.apply_driver_state([acc], state)
        acc.index = dev["index"]
        acc.sources["index"] = tool
        acc.model = dev["name"]
        acc.sources["model"] = tool
        if acc.variant is None and dev["name"].split():
            # a product the table does not know: the tool's product word ("MetaX C550" -> "c550")
            acc.variant = dev["name"].split()[-1].lower()
            acc.sources["variant"] = tool
        if dev.get("memory_total_mib"):
            acc.memory_mib = int(dev["memory_total_mib"])
            acc.sources["memory_mib"] = tool
        if dev.get("uuid"):
            acc.uuid = dev["uuid"]
            acc.sources["uuid"] = tool
        if driver_version:
            acc.driver_version = driver_version
            acc.sources["driver_version"] = tool
        acc.health = "ok"
        acc.hints = [h for h in acc.hints if h != missing_hint]
        if usage:
            acc.usage = Usage(
                utilization_pct=dev.get("utilization_pct"), memory_used_mib=dev.get("memory_used_mib"),
                temperature_c=dev.get("temperature_c"), power_w=dev.get("power_w"),
                power_limit_w=dev.get("power_limit_w"), source=tool)
        out.append(acc)

    taken = {a.index for a in out}
    next_index = max(taken, default=-1) + 1
    for acc in accs:
        if id(acc) in used:
            continue
        if acc.index in taken:
            acc.index = next_index
            next_index += 1
        taken.add(acc.index)
        acc.health = "warning"
        hint = (f"{tool} does not list {acc.pci_bdf}: check that the {driver.display_name} driver "
                f"is bound to it (dmesg) and that the device is healthy")
        if hint not in acc.hints:
            acc.hints.append(hint)
        out.append(acc)
    out.sort(key=lambda a: a.index)
    return out
