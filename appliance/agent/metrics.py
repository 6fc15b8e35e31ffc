"""Prometheus metrics of the node agent (prometheus-client, a registry of its own).

Three families: accelerators (from the agent's hardware re-detection, with usage), services
(from the reconcile pass: one Docker list call), and the agent itself (reconcile counts and
durations, plus the standard process metrics: RSS, CPU seconds, open fds). Gauges are set
wholesale after each pass, so a service that disappears also disappears from the output.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

MIB = 1024 * 1024


class AgentMetrics:
    def __init__(self, instance: str, version: str):
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.info = Gauge("appliance_agent_info", "Agent version and instance (always 1).",
                          ["version", "instance"], registry=r)
        self.info.labels(version=version, instance=instance).set(1)
        self.reconciles = Counter("appliance_agent_reconcile", "Reconcile passes.", registry=r)
        self.reconcile_errors = Counter("appliance_agent_reconcile_errors", "Reconcile passes that failed.",
                                        registry=r)
        self.reconcile_seconds = Histogram("appliance_agent_reconcile_duration_seconds",
                                           "Time of one reconcile pass.", registry=r,
                                           buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.last_reconcile = Gauge("appliance_agent_last_reconcile_timestamp_seconds",
                                    "When the last reconcile pass finished.", registry=r)
        self.docker_up = Gauge("appliance_docker_up", "1 when the Docker engine answered the last pass.",
                               registry=r)
        self.repairs = Counter("appliance_service_repairs", "Containers the agent started or recreated.",
                               ["service", "action"], registry=r)
        self.release = Gauge("appliance_release", "The active release id (0: none).", registry=r)
        self.service_up = Gauge("appliance_service_up", "1 when the service runs and is healthy.",
                                ["service", "kind"], registry=r)
        self.service_healthy = Gauge("appliance_service_healthy",
                                     "1 healthy, 0 unhealthy or not running, -1 no health check.",
                                     ["service"], registry=r)
        self.service_degraded = Gauge("appliance_service_degraded", "1 when the agent marked it degraded.",
                                      ["service"], registry=r)
        self.service_held = Gauge("appliance_service_held", "1 when the service is held down on purpose.",
                                  ["service"], registry=r)
        self.acc_info = Gauge("appliance_accelerator_info", "Accelerators seen by the last detection (1).",
                              ["vendor", "index", "model", "pci_bdf", "driver"], registry=r)
        self.acc_mem_total = Gauge("appliance_accelerator_memory_total_bytes", "Device memory.",
                                   ["vendor", "index"], registry=r)
        self.acc_mem_used = Gauge("appliance_accelerator_memory_used_bytes", "Device memory in use.",
                                  ["vendor", "index"], registry=r)
        self.acc_util = Gauge("appliance_accelerator_utilization_ratio", "Compute utilization 0..1.",
                              ["vendor", "index"], registry=r)
        self.acc_temp = Gauge("appliance_accelerator_temperature_celsius", "Temperature.",
                              ["vendor", "index"], registry=r)
        self.acc_power = Gauge("appliance_accelerator_power_watts", "Power draw.", ["vendor", "index"],
                               registry=r)
        self.acc_healthy = Gauge("appliance_accelerator_healthy", "1 ok, 0 warning/error, -1 unknown.",
                                 ["vendor", "index"], registry=r)
        self.acc_count = Gauge("appliance_accelerators", "Accelerators detected.", registry=r)
        self.detect_seconds = Gauge("appliance_agent_detect_duration_seconds", "Time of the last detection.",
                                    registry=r)

    def set_services(self, services, notes: dict[str, dict]) -> None:
        for g in (self.service_up, self.service_healthy, self.service_degraded, self.service_held):
            g.clear()
        for s in services:
            running = s.state == "running"
            self.service_up.labels(service=s.name, kind=s.kind or "").set(
                1 if running and s.health in ("healthy", None) else 0)
            self.service_healthy.labels(service=s.name).set(
                -1 if running and s.health is None else (1 if running and s.health == "healthy" else 0))
            note = notes.get(s.name, {})
            self.service_degraded.labels(service=s.name).set(1 if note.get("degraded") else 0)
            self.service_held.labels(service=s.name).set(1 if note.get("held") else 0)

    def set_accelerators(self, inventory, seconds: float) -> None:
        for g in (self.acc_info, self.acc_mem_total, self.acc_mem_used, self.acc_util, self.acc_temp,
                  self.acc_power, self.acc_healthy):
            g.clear()
        self.detect_seconds.set(seconds)
        accs = inventory.accelerators if inventory is not None else []
        self.acc_count.set(len(accs))
        for a in accs:
            key = dict(vendor=a.vendor, index=str(a.index))
            self.acc_info.labels(model=a.model, pci_bdf=a.pci_bdf or "", driver=a.driver_version or "",
                                 **key).set(1)
            if a.memory_mib is not None:
                self.acc_mem_total.labels(**key).set(a.memory_mib * MIB)
            self.acc_healthy.labels(**key).set({"ok": 1, "warning": 0, "error": 0}.get(a.health, -1))
            u = a.usage
            if u is None:
                continue
            if u.memory_used_mib is not None:
                self.acc_mem_used.labels(**key).set(u.memory_used_mib * MIB)
            if u.utilization_pct is not None:
                self.acc_util.labels(**key).set(u.utilization_pct / 100.0)
            if u.temperature_c is not None:
                self.acc_temp.labels(**key).set(u.temperature_c)
            if u.power_w is not None:
                self.acc_power.labels(**key).set(u.power_w)
