"""Detection: run every chip driver's three layers and assemble the inventory.

Each driver runs isolated: any exception in one vendor's probe is recorded in its
``Probe`` and never hides another vendor's devices. Devices found through PCI sysfs
(layer a) are kept even when the driver state (b) or vendor tool (c) fails.
"""

from __future__ import annotations

import time
from pathlib import Path

from appliance.inventory.hostview import HostView, LiveHost, SnapshotHost
from appliance.inventory.models import Accelerator, Inventory, Probe, ProbeStep
from appliance.inventory.pci import PciDevice, scan_pci


def host_for(snapshot: str | Path | None) -> HostView:
    return SnapshotHost(snapshot) if snapshot else LiveHost()


def _probe_driver(driver, host: HostView, pci: list[PciDevice], usage: bool) -> tuple[list[Accelerator], Probe]:
    start = time.monotonic()
    probe = Probe(driver=driver.vendor)
    accs: list[Accelerator] = []
    failed = False

    t0 = time.monotonic()
    try:
        mine = [d for d in pci if driver.claims(d)]
        accs = [driver.from_pci(d, i, host) for i, d in enumerate(mine)]
        probe.steps.append(ProbeStep(name="pci-sysfs", result="ok" if accs else "none",
                                     detail=f"{len(accs)} device(s)", seconds=round(time.monotonic() - t0, 4)))
    except Exception as exc:  # noqa: BLE001 - isolate vendors from each other
        failed = True
        probe.steps.append(ProbeStep(name="pci-sysfs", result="error", detail=str(exc),
                                     seconds=round(time.monotonic() - t0, 4)))

    t0 = time.monotonic()
    state = None
    try:
        state = driver.driver_state(host)
        probe.steps.extend(state.steps)
        found = state.driver_loaded or state.driver_version or state.dev_nodes
        probe.steps.append(ProbeStep(
            name="driver-state", result="ok" if found else "none",
            detail=(f"driver {state.driver_version}" if state.driver_version else
                    "no driver loaded"), seconds=round(time.monotonic() - t0, 4)))
        if accs:
            driver.apply_driver_state(accs, state)
    except Exception as exc:  # noqa: BLE001
        failed = True
        probe.steps.append(ProbeStep(name="driver-state", result="error", detail=str(exc),
                                     seconds=round(time.monotonic() - t0, 4)))

    # Layer c only when there is something to enrich: PCI devices, or a loaded driver
    # (e.g. inside a container without full PCI sysfs).
    if accs or (state is not None and (state.driver_loaded or state.dev_nodes)):
        t0 = time.monotonic()
        steps: list[ProbeStep] = []
        try:
            accs = driver.enrich(host, accs, usage=usage, steps=steps)
            probe.steps.extend(steps)
        except Exception as exc:  # noqa: BLE001
            failed = True
            probe.steps.extend(steps)
            probe.error = str(exc)
            probe.steps.append(ProbeStep(name="enrich", result="error", detail=str(exc),
                                         seconds=round(time.monotonic() - t0, 4)))
    if failed and probe.error is None:
        probe.error = "; ".join(s.detail or s.name for s in probe.steps if s.result == "error")
    errors = [s for s in probe.steps if s.result == "error"]
    if failed or errors:
        probe.result = "partial" if accs else "error"
        if probe.error is None:
            probe.error = "; ".join(s.detail or s.name for s in errors)
    else:
        probe.result = "ok" if accs else "none"
    probe.seconds = round(time.monotonic() - start, 4)
    return accs, probe


def detect(host: HostView | None = None, *, usage: bool = True, snapshot: str | Path | None = None) -> Inventory:
    """Detect the node (live by default, or from a snapshot directory)."""
    from appliance.inventory.node import node_facts
    from chip_drivers import all_drivers

    if host is None:
        host = host_for(snapshot)
    pci = scan_pci(host)
    accelerators: list[Accelerator] = []
    probes: list[Probe] = []
    warnings: list[str] = []
    for driver in all_drivers():
        accs, probe = _probe_driver(driver, host, pci, usage)
        accelerators.extend(accs)
        probes.append(probe)
        if probe.error:
            warnings.append(f"{driver.vendor} probe: {probe.error}")
    source = "live" if host.live else f"snapshot:{getattr(host, 'directory', '')}"
    return Inventory(source=source, node=node_facts(host), accelerators=accelerators,
                     probes=probes, warnings=warnings)
