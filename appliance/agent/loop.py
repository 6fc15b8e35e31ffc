"""The node agent: keep the recorded release running, watch the hardware, export metrics.

Every ``interval_s`` one reconcile pass:

1. reads the active release and the desired state (``appliance down`` sets ``down``: the
   agent then restarts nothing) from the state;
2. lists the instance's containers (one Docker call) and repairs what differs: a missing
   container is recreated, an exited one started (recreated if it will not start), one
   unhealthy for ``unhealthy_passes`` passes restarted. A service whose probe is ``http``
   (no Docker health check: a vendor image that may lack python3 and curl) is probed from
   here each pass (:mod:`appliance.runtime.probe`), and that result is its health -- for the
   repairs, the metrics and, recorded in the state, ``appliance status``. Repairs back off per service
   (interval x 2^n, capped) while a service keeps failing, and every repair is an event in
   the state. Services held by :func:`appliance.runtime.stack.stop_services` are left alone;
3. re-detects the hardware (with usage, for the metrics) and marks a service degraded when
   a device it was planned on is gone (and clears the mark when it is back);
4. updates the Prometheus metrics and records one point per series in the metrics history
   (:mod:`appliance.agent.history`, for the admin console's charts).

Repairs take the instance lock without waiting: while ``init`` or ``upgrade`` runs, the
agent only observes. SIGTERM/SIGINT end the loop after the current pass; exit code 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from appliance.errors import ApplianceError
from appliance.runtime import labels as L
from appliance.runtime import releases
from appliance.runtime.models import DEFAULT_AGENT_METRICS_PORT
from appliance.runtime.releases import heartbeat_key  # noqa: F401 - re-exported for readers

log = logging.getLogger("appliance.agent")


# How long one state statement waits for another process's write lock. Short: a long
# transaction elsewhere (an upgrade) costs the agent one pass, never its loop.
STATE_BUSY_TIMEOUT_S = 2.0


@dataclass
class AgentConfig:
    interval_s: float = 15.0
    detect_every: int = 1               # re-detect hardware every N passes
    backoff_max_s: float = 300.0
    unhealthy_passes: int = 4           # consecutive unhealthy observations before a restart
    metrics_addr: str = "127.0.0.1"
    metrics_port: int = DEFAULT_AGENT_METRICS_PORT  # 0: no metrics endpoint
    snapshot: str | None = None         # detect from a node snapshot (tests, support)
    once: bool = False


@dataclass
class PassReport:
    release: int | None = None
    desired: str = "up"
    services: int = 0
    repairs: list[dict] = field(default_factory=list)
    degraded: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0




def _device_key(ref) -> str:
    return f"{ref.vendor}:{ref.index}" + (f" ({ref.uuid or ref.pci_bdf})" if (ref.uuid or ref.pci_bdf) else "")


def missing_devices(device_refs, inventory) -> list[str]:
    """The planned devices the inventory no longer has (:meth:`Inventory.find`)."""
    if inventory is None:
        return []
    return [_device_key(ref) for ref in device_refs if inventory.find(ref) is None]


class Agent:
    def __init__(self, config: AgentConfig | None = None, *, instance: str | None = None, store=None):
        from appliance import __version__
        from appliance.agent.metrics import AgentMetrics

        self.config = config or AgentConfig()
        self.instance = instance or L.instance()
        if store is None:
            from appliance.state.store import StateStore

            store = StateStore.open_default(busy_timeout_s=STATE_BUSY_TIMEOUT_S)
        self.store = releases.open_store(store)
        self.metrics = AgentMetrics(self.instance, __version__)
        self.stop_event = threading.Event()
        self.docker = None
        self.inventory = None
        self.passes = 0
        self._unhealthy: dict[str, int] = {}
        self._http = None
        self._history = None

    # ---- lifecycle --------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def _stop(signum, frame):
            log.info("signal %s: stopping after this pass", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def start_metrics(self) -> str | None:
        if not self.config.metrics_port:
            return None
        from prometheus_client import start_http_server

        res = start_http_server(self.config.metrics_port, addr=self.config.metrics_addr,
                                registry=self.metrics.registry)
        self._http = res[0] if isinstance(res, tuple) else None
        return f"http://{self.config.metrics_addr}:{self.config.metrics_port}/metrics"

    def run(self) -> int:
        self._event("agent started", data={"instance": self.instance, "interval_s": self.config.interval_s})
        self.recover()
        try:
            while not self.stop_event.is_set():
                start = time.monotonic()
                self.reconcile_once()
                if self.config.once:
                    break
                self.stop_event.wait(max(0.0, self.config.interval_s - (time.monotonic() - start)))
        finally:
            self.close()
            self._heartbeat(running=False)
            self._event("agent stopped", data={"instance": self.instance})
        return 0

    def recover(self) -> None:
        """Finish or roll back an upgrade a crash interrupted (once, when the agent starts: the
        box comes back from a power cut in one consistent release without anyone typing)."""
        from appliance.bundle.apply import recover

        try:
            res = recover(store=self.store, say=lambda m: log.info("recovery: %s", m))
        except ApplianceError as exc:
            log.warning("recovering an interrupted upgrade failed: %s", exc.one_line())
            return
        if res is not None:
            log.info("recovery: %s", res.message)
            self._event(f"recovered an interrupted {res.kind}: {res.message}", data={"action": res.action})

    def _event(self, message: str, **kw) -> None:
        """Record an agent event; a locked or unwritable state costs the event, not the agent."""
        try:
            self.store.add_event("agent", message, **kw)
        except ApplianceError as exc:
            log.warning("cannot record an event (%s): %s", message, exc.one_line())

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self.docker is not None:
            self.docker.close()
            self.docker = None

    # ---- one pass ---------------------------------------------------------------------------
    def _connect(self):
        from appliance.runtime.docker_adapter import Docker

        if self.docker is None:
            self.docker = Docker(timeout_s=10)
        return self.docker

    def reconcile_once(self) -> PassReport:
        report = PassReport()
        start = time.monotonic()
        self.passes += 1
        try:
            if (self.passes - 1) % max(1, self.config.detect_every) == 0:
                self._detect()
            self._reconcile(report)
            self.metrics.docker_up.set(1)
        except ApplianceError as exc:
            report.error = exc.one_line()
            self.metrics.reconcile_errors.inc()
            if self.docker is not None and "docker" in (exc.where or "").lower():
                self.docker = None
            self.metrics.docker_up.set(0 if "docker" in (exc.where or "").lower() else 1)
            log.warning("reconcile failed: %s", report.error)
        except Exception as exc:  # noqa: BLE001 - the agent must survive anything
            report.error = f"{type(exc).__name__}: {exc}"
            self.metrics.reconcile_errors.inc()
            self.docker = None
            log.exception("reconcile failed")
        report.seconds = time.monotonic() - start
        self.metrics.reconciles.inc()
        self.metrics.reconcile_seconds.observe(report.seconds)
        self.metrics.last_reconcile.set(time.time())
        self._heartbeat(running=True)
        return report

    def _heartbeat(self, *, running: bool) -> None:
        """Record that the agent is alive (``appliance status`` warns when this goes stale)."""
        try:
            self.store.set_meta(heartbeat_key(self.instance), json.dumps(
                {"ts": time.time(), "interval_s": self.config.interval_s, "pid": os.getpid(), "running": running,
                 "metrics_port": self.config.metrics_port or None}))
        except ApplianceError as exc:  # a locked or unwritable state must not stop the loop
            log.warning("cannot record the heartbeat: %s", exc.one_line())

    def _detect(self) -> None:
        from appliance.inventory.detect import detect

        t = time.monotonic()
        try:
            self.inventory = detect(snapshot=self.config.snapshot, usage=True)
        except ApplianceError as exc:
            log.warning("hardware detection failed: %s", exc.one_line())
            return
        self.metrics.set_accelerators(self.inventory, time.monotonic() - t)

    def _reconcile(self, report: PassReport) -> None:
        from appliance.runtime.stack import instance_lock, list_services

        release = releases.current(self.store, self.instance)
        report.release = release.id if release else None
        report.desired = releases.desired(self.store, self.instance)
        self.metrics.release.set(release.id if release else 0)
        docker = self._connect()
        services = list_services(docker, self.store, self.instance, release=release)
        report.services = len(services)
        probes = self._probe_outside(docker, release, services)
        self._mark_degraded(release, report)
        notes = releases.service_notes(self.store, self.instance)
        if release is not None and report.desired == "up":
            with instance_lock(self.instance, wait=False) as locked:
                if locked:
                    for state in services:
                        svc = release.stack.service(state.name)
                        if svc is None or notes.get(state.name, {}).get("held"):
                            continue
                        action = self._needs_repair(state)
                        if action:
                            self._repair(release, svc, state, action, notes.get(state.name, {}), report,
                                         probe=probes.get(state.name))
            for repaired in report.repairs:  # restarted or recreated: the last probe is of the old run
                probes.pop(repaired["service"], None)
        self._record_probes(probes)
        if report.repairs:
            services = list_services(docker, self.store, self.instance, release=release)
            notes = releases.service_notes(self.store, self.instance)
        self._supervise_jobs(docker)
        self.metrics.set_services(services, notes)
        self._record_history(services, notes)

    def _record_history(self, services, notes: dict[str, dict]) -> None:
        """One point per series for the console's charts (:mod:`appliance.agent.history`), one
        transaction; a locked state costs the sample and an unreadable usage file the gateway's
        samples, never the pass."""
        from appliance.agent import history as H
        from appliance.gateway.keys import read_model_usage, read_usage
        from appliance.gateway.users import read_user_usage
        from appliance.train import store as jobs_store

        try:
            usage = read_usage()  # the gateway's usage.json under gateway_dir(), as `keys list` reads it
            per_model, per_user = read_model_usage(), read_user_usage()
        except ApplianceError as exc:  # no gateway dir here (the readers treat a bad file as no usage)
            log.debug("no gateway usage for the history: %s", exc)
            usage, per_model, per_user = None, None, None
        try:
            if self._history is None:
                self._history = H.History(self.store)
            running = [j for j in jobs_store.list_jobs(jobs_store.open_store(self.store), self.instance,
                                                       active_only=True) if j.status == "running"]
            self._history.record({**H.node_samples(), **H.job_samples(running), **H.model_samples(per_model),
                                  **H.user_samples(per_user), **H.samples_from(self.inventory, services, usage, notes)})
        except ApplianceError as exc:
            log.warning("cannot record the history: %s", exc.one_line())

    def _probe_outside(self, docker, release, services) -> dict[str, dict]:
        """GET the health path of every running ``http``-probe service (label ``appliance.probe``:
        Docker has no health check for them) at its address on the stack network, in parallel,
        each bounded by its health timeout; sets each one's ``health`` for this pass as Docker
        would (a failure within the start period is ``starting``) and returns the records
        (service -> container, health, detail, ts) :meth:`_record_probes` writes for status."""
        from appliance.runtime.probe import health_state, http_probe

        stack = release.stack if release is not None else None
        targets = []
        for state in services:
            svc = stack.service(state.name) if stack is not None else None
            if svc is None or state.probe != "http" or state.state != "running" or not state.container_id:
                continue
            network = stack.network_of(svc) or stack.network  # an engine's address is on the engine network
            addr = docker.container_address(state.container_id, network)
            if addr.state == "running":
                targets.append((state, svc, addr, network))
        if not targets:
            return {}

        def probe(target):
            _, svc, addr, _ = target
            return http_probe(addr.ip, svc.health.port, svc.health.path, svc.health.timeout_s) if addr.ip else None

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
            results = list(pool.map(probe, targets))
        now = time.time()
        records: dict[str, dict] = {}
        for (state, svc, addr, network), res in zip(targets, results):
            age = now - (addr.started_ts or state.created_ts or now)
            state.health = health_state(res is not None and res.ok, age, svc.health.start_period_s)
            records[state.name] = {"container": state.container_id, "health": state.health, "ts": now,
                                   "detail": res.text() if res else f"no address on {network}"}
        return records

    def _record_probes(self, records: dict[str, dict]) -> None:
        """For ``appliance status`` (:func:`appliance.runtime.views.probe_records`): valid for three
        intervals, as the heartbeat; a locked state costs the record, not the pass."""
        try:
            releases.record_probes(self.store, self.instance, records, valid_s=3 * self.config.interval_s + 5)
        except ApplianceError as exc:
            log.warning("cannot record the health probes: %s", exc.one_line())

    def _needs_repair(self, state) -> str | None:
        """recreate (the release's container is gone), start (it stopped), restart (unhealthy)."""
        if state.state == "missing" or not state.up_to_date:
            self._unhealthy.pop(state.name, None)
            return "recreate"
        if state.state in ("exited", "dead", "created"):
            self._unhealthy.pop(state.name, None)
            return "start"
        if state.state == "running" and state.health == "unhealthy":
            self._unhealthy[state.name] = self._unhealthy.get(state.name, 0) + 1
            return "restart" if self._unhealthy[state.name] >= self.config.unhealthy_passes else None
        if state.state == "running" and state.health in ("healthy", None):
            self._unhealthy.pop(state.name, None)
            note = releases.service_notes(self.store, self.instance).get(state.name, {})
            if note.get("failures"):  # healthy again: the next problem is repaired at once
                releases.note_service(self.store, self.instance, state.name, failures=0, next_try_ts=None)
        return None

    def _repair(self, release, svc, state, action: str, note: dict, report: PassReport,
                probe: dict | None = None) -> None:
        now = time.time()
        next_try = note.get("next_try_ts")
        if next_try and now < next_try:
            return
        failures = int(note.get("failures") or 0)
        docker = self.docker
        what = {"recreate": f"container of {svc.name} is missing: recreating it",
                "start": f"{svc.name} is {state.state}: starting it",
                "restart": f"{svc.name} is unhealthy: restarting it"
                           + (f" (last check from outside: {probe['detail']})" if probe else "")}[action]
        ok = True
        detail = ""
        try:
            if action in ("start", "restart") and state.container_id:
                if action == "restart":
                    docker.stop(state.container_id, timeout_s=10)
                try:
                    docker.start(state.container_id)
                except ApplianceError:
                    docker.remove(state.container_id, force=True)
                    action = "recreate"
                    self._recreate(release, svc)
            else:
                self._recreate(release, svc)
        except ApplianceError as exc:
            ok = False
            detail = exc.one_line()
        failures += 1
        delay = min(self.config.interval_s * (2 ** (failures - 1)), self.config.backoff_max_s)
        releases.note_service(self.store, self.instance, svc.name, failures=failures,
                              next_try_ts=now + delay if failures > 1 else now,
                              restarts=int(note.get("restarts") or 0) + 1, last_restart_ts=now)
        self.metrics.repairs.labels(service=svc.name, action=action).inc()
        message = what if ok else f"{what} failed: {detail}"
        self.store.add_event("agent", message, service=svc.name,
                             data={"action": action, "ok": ok, "release": release.id, "attempt": failures,
                                   "previous_state": state.state, "container": state.container_id})
        report.repairs.append({"service": svc.name, "action": action, "ok": ok})
        log.info(message)

    def _recreate(self, release, svc) -> None:
        from appliance.errors import RuntimeFailure
        from appliance.runtime.converge import container_spec
        from appliance.runtime.images import ImageEnsurer

        docker = self.docker
        want = release.stack.hash_of(svc.name)
        for c in docker.list_containers(L.instance_filter(self.instance) + [f"{L.SERVICE}={svc.name}"]):
            if c.labels.get(L.SPEC_HASH) != want:  # a stale definition must not hold the name or port
                docker.remove(c.id, force=True)
        if (svc.build or svc.recipe) and docker.image_labels(svc.run_image()) is None:
            rebuilt = ImageEnsurer(docker).ensure(svc.image, svc.build, svc.recipe)
            if rebuilt.ref != svc.run_image():
                raise RuntimeFailure(f"image {svc.run_image()} is gone and its sources have changed since "
                                     f"(they build {rebuilt.ref} now)", where=f"service {svc.name}",
                                     fix="re-apply the stack with `appliance init --yes`")
        if not docker.network_exists(release.stack.network):
            docker.ensure_network(release.stack.network, {**L.base_labels(self.instance), L.SERVICE: "network"})
        for b in svc.binds:
            if b.volume:
                docker.ensure_volume(b.source, {**L.base_labels(self.instance), L.SERVICE: "volume"})
        docker.replace_container(container_spec(svc, release.stack, release.id), start=True)

    def _mark_degraded(self, release, report: PassReport) -> None:
        if release is None or release.stack is None:
            return
        notes = releases.service_notes(self.store, self.instance)
        for svc in release.stack.services:
            if not svc.device_refs:
                continue
            gone = missing_devices(svc.device_refs, self.inventory)
            was = notes.get(svc.name, {}).get("degraded")
            if gone:
                reason = f"device(s) gone: {', '.join(gone)}"
                report.degraded[svc.name] = reason
                if was != reason:
                    releases.note_service(self.store, self.instance, svc.name, degraded=reason)
                    self.store.add_event("agent", f"{svc.name} degraded: {reason}", service=svc.name,
                                         data={"action": "degraded", "devices": gone})
            elif was:
                releases.note_service(self.store, self.instance, svc.name, degraded=None)
                self.store.add_event("agent", f"{svc.name}: its devices are back", service=svc.name,
                                     data={"action": "recovered"})

    def _supervise_jobs(self, docker) -> None:
        """Training jobs: their state is derived from the job containers + the state each pass
        (:func:`appliance.train.supervise.reconcile_jobs`), so a restarted agent picks up."""
        from appliance.train.supervise import reconcile_jobs

        try:
            reconcile_jobs(docker=docker, store=self.store, instance=self.instance)
        except Exception:  # noqa: BLE001 - a job problem must not stop service repair
            log.exception("training job supervision failed")
