"""Detection: run every chip driver's three layers and assemble the inventory.

Each driver runs isolated: any exception in one vendor's probe is recorded in its
``Probe`` and never hides another vendor's devices. Devices found through PCI sysfs
(layer a) are kept even when the driver state (b) or vendor tool (c) fails.

Drivers and node facts run in parallel threads (vendor tools and ``docker version`` are
separate processes, so waiting on them overlaps). A driver that does not finish within its
deadline (a vendor library call that hangs, which no subprocess timeout can stop) is
reported as an error with its PCI devices; its thread is abandoned (daemon).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from appliance.inventory.hostview import HostView, LiveHost, SnapshotHost, tool_timeout_cap
from appliance.inventory.models import Accelerator, Inventory, Node, Probe, ProbeStep
from appliance.inventory.pci import PciDevice, scan_pci


def host_for(snapshot: str | Path | None = None, root: str | Path | None = None) -> HostView:
    """A snapshot replay when ``snapshot`` is given, else this machine (optionally another root)."""
    return SnapshotHost(snapshot) if snapshot else LiveHost(root)


def _elapsed(t0: float) -> float:
    return round(time.monotonic() - t0, 4)


def _layer_a(driver, host: HostView, pci: list[PciDevice], probe: Probe) -> tuple[list[Accelerator], bool]:
    t0 = time.monotonic()
    try:
        mine = [d for d in pci if driver.claims(d)]
        accs = [driver.from_pci(d, i, host) for i, d in enumerate(mine)]
    except Exception as exc:  # noqa: BLE001 - isolate vendors from each other
        probe.steps.append(ProbeStep(name="pci-sysfs", result="error", detail=f"{type(exc).__name__}: {exc}",
                                     seconds=_elapsed(t0)))
        return [], True
    probe.steps.append(ProbeStep(name="pci-sysfs", result="ok" if accs else "none",
                                 detail=f"{len(accs)} device(s)", seconds=_elapsed(t0)))
    return accs, False


def _layers_bc(driver, host: HostView, accs: list[Accelerator], usage: bool,
               probe: Probe) -> tuple[list[Accelerator], bool]:
    failed = False
    t0 = time.monotonic()
    state = None
    try:
        state = driver.driver_state(host)
        probe.steps.extend(state.steps)
        found = state.driver_loaded or state.driver_version or state.dev_nodes
        probe.steps.append(ProbeStep(
            name="driver-state", result="ok" if found else "none",
            detail=(f"driver {state.driver_version}" if state.driver_version else
                    "driver loaded, version unknown" if found else "no driver loaded"),
            seconds=_elapsed(t0)))
        if accs:
            driver.apply_driver_state(accs, state)
    except Exception as exc:  # noqa: BLE001
        failed = True
        probe.steps.append(ProbeStep(name="driver-state", result="error", detail=f"{type(exc).__name__}: {exc}",
                                     seconds=_elapsed(t0)))

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
            probe.error = str(exc) or type(exc).__name__
            if not steps or steps[-1].result != "error":
                probe.steps.append(ProbeStep(name="enrich", result="error", detail=probe.error,
                                             seconds=_elapsed(t0)))
    return accs, failed


def _finish(probe: Probe, accs: list[Accelerator], failed: bool, start: float) -> None:
    errors = [s for s in probe.steps if s.result == "error"]
    if failed or errors:
        probe.result = "partial" if accs else "error"
        if probe.error is None:
            probe.error = "; ".join(s.detail or s.name for s in errors) or "probe failed"
    else:
        probe.result = "ok" if accs else "none"
    probe.seconds = _elapsed(start)


def _probe_driver(driver, host: HostView, pci: list[PciDevice], usage: bool) -> tuple[list[Accelerator], Probe]:
    """All three layers of one driver, in this thread (kept for callers that want no threads)."""
    start = time.monotonic()
    probe = Probe(driver=driver.vendor)
    accs, failed_a = _layer_a(driver, host, pci, probe)
    accs, failed_bc = _layers_bc(driver, host, accs, usage, probe)
    _finish(probe, accs, failed_a or failed_bc, start)
    return accs, probe


def driver_deadline_s(driver) -> float:
    """How long one driver may take in all: room for a few tool calls, each under its timeout."""
    timeout = float(getattr(driver, "tool_timeout_s", 10.0))
    cap = tool_timeout_cap()
    if cap is not None:
        timeout = min(timeout, cap)
    return 3 * timeout + min(5.0, timeout)


class _DriverRun(threading.Thread):
    def __init__(self, driver, host: HostView, pci: list[PciDevice], usage: bool):
        super().__init__(name=f"probe-{driver.vendor}", daemon=True)
        self.driver, self.host, self.usage = driver, host, usage
        self.start_t = time.monotonic()
        self.probe = Probe(driver=driver.vendor)
        self.accs, self.failed = _layer_a(driver, host, pci, self.probe)
        self.pci_accs = [a.model_copy(deep=True) for a in self.accs]
        self.result: list[Accelerator] | None = None

    def run(self) -> None:
        try:
            accs, failed = _layers_bc(self.driver, self.host, self.accs, self.usage, self.probe)
            self.failed = self.failed or failed
            self.result = accs
        except BaseException as exc:  # noqa: BLE001 - never let a thread die silently
            self.failed = True
            self.probe.error = f"{type(exc).__name__}: {exc}"
            self.result = self.accs

    def outcome(self) -> tuple[list[Accelerator], Probe]:
        if self.result is None:  # still running past its deadline
            probe = Probe(driver=self.driver.vendor, steps=list(self.probe.steps),
                          error=f"probe did not finish within {driver_deadline_s(self.driver):.0f}s "
                                "(a vendor library or tool hangs); reporting PCI devices only")
            probe.steps.append(ProbeStep(name="deadline", result="error", detail=probe.error))
            _finish(probe, self.pci_accs, True, self.start_t)
            return self.pci_accs, probe
        _finish(self.probe, self.result, self.failed, self.start_t)
        return self.result, self.probe


class _NodeRun(threading.Thread):
    def __init__(self, host: HostView, usage: bool):
        super().__init__(name="node-facts", daemon=True)
        self.host, self.usage = host, usage
        self.node: Node | None = None
        self.error: str | None = None

    def run(self) -> None:
        from appliance.inventory.node import node_facts

        try:
            self.node = node_facts(self.host, usage=self.usage)
        except Exception as exc:  # noqa: BLE001 - node facts never hide accelerators
            self.error = f"{type(exc).__name__}: {exc}"


def detect(host: HostView | None = None, *, usage: bool = True, snapshot: str | Path | None = None,
           root: str | Path | None = None, drivers: list | None = None, node_facts: bool = True) -> Inventory:
    """Detect the node (live by default, from a snapshot directory, or a live host at ``root``).

    ``drivers`` replaces the registry (tests of the orchestrator itself). ``node_facts=False``
    (``appliance status``, which reads node health itself) skips the node facts -- and with them
    the ``docker version`` subprocess -- leaving ``inventory.node`` empty.
    """
    import chip_drivers

    if host is None:
        host = host_for(snapshot, root)
    node_run = _NodeRun(host, usage)
    if node_facts:
        node_run.start()
    pci = scan_pci(host)
    warnings: list[str] = []
    # vendor id -> a started run, or a finished "no PCI functions" probe
    plan: list[tuple[str, _DriverRun | Probe]] = []
    if drivers is None:
        wanted = chip_drivers.drivers_for_pci({d.vendor for d in pci} if pci else None)
        for vendor in chip_drivers.VENDOR_IDS:
            if vendor not in wanted:
                ids = "/".join(chip_drivers.PCI_VENDORS[vendor])
                plan.append((vendor, Probe(driver=vendor, result="none", steps=[ProbeStep(
                    name="pci-sysfs", result="none", detail=f"no PCI functions with vendor id {ids}")])))
                continue
            try:
                plan.append((vendor, _DriverRun(chip_drivers.driver_class(vendor)(), host, pci, usage)))
            except Exception as exc:  # noqa: BLE001 - a broken driver module hides no other vendor
                plan.append((vendor, Probe(driver=vendor, result="error", error=f"driver failed to load: {exc}",
                                           steps=[ProbeStep(name="load", result="error", detail=str(exc))])))
    else:
        plan = [(d.vendor, _DriverRun(d, host, pci, usage)) for d in drivers]
    for _, item in plan:
        if isinstance(item, _DriverRun):
            item.start()
    accelerators: list[Accelerator] = []
    probes: list[Probe] = []
    for vendor, item in plan:
        if isinstance(item, _DriverRun):
            item.join(max(0.0, driver_deadline_s(item.driver) - (time.monotonic() - item.start_t)))
            accs, probe = item.outcome()
            accelerators.extend(accs)
        else:
            probe = item
        probes.append(probe)
        if probe.error:
            warnings.append(f"{vendor} probe: {probe.error}")
    if node_facts:
        node_run.join(30.0)
    else:
        node_run.node = Node()
    node = node_run.node
    if node is None:
        node = Node()
        warnings.append(f"node facts: {node_run.error or 'did not finish within 30s'}")
    source = getattr(host, "source_label", None) or (
        ("live" if host.native else f"live:{host.root}") if host.live else f"snapshot:{getattr(host, 'directory', '')}")
    return Inventory(source=source, node=node, accelerators=accelerators, probes=probes, warnings=warnings)
