"""``appliance preflight`` for this box: the provisioning rules with the box's own facts.

On a box that is already installed, the gateway, the apps and the agent hold their ports: a
plain port check would fail on the box's own services. So the ports checked are the ones the
recorded site configuration publishes (gateway, apps) plus the agent's metrics port, and the
ones this instance's containers (and its running agent) already hold count as free.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from appliance.provision.models import PreflightReport


def own_agent_port(store, inst: str) -> int | None:
    """The metrics port of this instance's agent while it runs (from its heartbeat)."""
    from appliance.runtime.releases import heartbeat_key

    raw = store.get_meta(heartbeat_key(inst)) if store is not None else None
    beat = json.loads(raw) if raw else None
    if not beat or not beat.get("running") or not beat.get("metrics_port"):
        return None
    fresh = time.time() - float(beat["ts"]) <= 3 * float(beat.get("interval_s") or 15.0) + 10
    return int(beat["metrics_port"]) if fresh else None


def box_preflight(*, snapshot: str | None = None, root: str | None = None, images_mib: int = 0,
                  ports: list[int] | None = None, packages_dir: str | Path | None = None) -> PreflightReport:
    """Run the preflight rules for this box (see the module docstring). ``ports`` replaces the
    site's ports (``--port``); the box's own ones still count as free."""
    from appliance.catalog import load_catalog
    from appliance.deploy.pipeline import host_ports
    from appliance.deploy.requests import recorded_site
    from appliance.errors import DockerUnavailable
    from appliance.paths import state_path
    from appliance.provision.preflight import run_preflight
    from appliance.runtime import labels as L
    from appliance.runtime.models import DEFAULT_AGENT_METRICS_PORT
    from appliance.runtime.stack import own_host_ports
    from appliance.state.store import StateStore

    inst = L.instance()
    store = StateStore(state_path()) if state_path().exists() else None
    site, _ = recorded_site(store)
    if ports:
        wanted: dict[str, int] = {f"port {p}": int(p) for p in ports}
    else:
        wanted = {**host_ports(load_catalog(), site), "agent-metrics": DEFAULT_AGENT_METRICS_PORT}
    own: set[int] = set()
    if not snapshot:
        try:
            from appliance.runtime.docker_adapter import Docker

            with Docker(timeout_s=5) as docker:
                own = own_host_ports(docker, inst)
        except DockerUnavailable:
            pass  # the Docker rule reports it
        agent_port = own_agent_port(store, inst)
        if agent_port:
            own.add(agent_port)
    return run_preflight(snapshot=snapshot, root=root, images_mib=images_mib, ports=wanted,
                         allowed_busy_ports=own, packages_dir=packages_dir)
