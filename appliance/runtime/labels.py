"""Labels and names of everything the runtime creates in Docker.

Every container, network, volume and image we create carries ``appliance.managed=true``;
containers, networks and volumes also carry ``appliance.instance=<instance>`` so several
stacks (or several test runs) can share one Docker engine and each operation -- list,
down --purge, agent reconcile -- touches only its own instance. Names include the
instance for the same reason.
"""

from __future__ import annotations

import os
import re

MANAGED = "appliance.managed"
INSTANCE = "appliance.instance"
SERVICE = "appliance.service"
KIND = "appliance.kind"
RELEASE = "appliance.release"
PLAN_HASH = "appliance.plan-hash"
SPEC_HASH = "appliance.spec-hash"
CONTENT_HASH = "appliance.content-hash"
DEMO = "appliance.demo"
MODELS = "appliance.models"
HOST_PORT = "appliance.host-port"
DEVICES = "appliance.devices"
PROBE = "appliance.probe"          # python3 | curl | http (http: probed from outside, no Docker health)
NETWORK = "appliance.network"      # on networks: front | engines

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,40}$")


def instance() -> str:
    """The instance name (``APPLIANCE_INSTANCE``, default ``default``); validated for Docker names."""
    from appliance.errors import UsageError

    name = os.environ.get("APPLIANCE_INSTANCE", "default") or "default"
    if not _NAME_RE.match(name):
        raise UsageError(f"invalid instance name {name!r}", where="APPLIANCE_INSTANCE",
                         fix="use lower-case letters, digits, '-', '_' or '.' (at most 41 characters)")
    return name


def prefix(inst: str) -> str:
    return f"appliance-{inst}"


def network_name(inst: str) -> str:
    """The stack's front network (a bridge): the gateway and the apps, the only one with published ports."""
    return f"{prefix(inst)}-net"


def engine_network_name(inst: str) -> str:
    """The stack's engine network (internal: no route out, nothing published): the engines and the
    gateway, which is the only container on both."""
    return f"{prefix(inst)}-engines"


def volume_name(inst: str, suffix: str) -> str:
    return f"{prefix(inst)}-{suffix}"


def container_name(inst: str, service: str, spec_hash: str) -> str:
    """Unique per definition, so a blue/green replacement can run beside the old container."""
    return f"{prefix(inst)}-{service}-{spec_hash[:8]}"


def base_labels(inst: str) -> dict[str, str]:
    return {MANAGED: "true", INSTANCE: inst}


def network_labels(inst: str, internal: bool = False) -> dict[str, str]:
    """Labels of a stack network (``down --purge`` finds both by the instance label)."""
    return {**base_labels(inst), SERVICE: "network", NETWORK: "engines" if internal else "front"}


def instance_filter(inst: str) -> list[str]:
    """Docker ``label`` filters selecting this instance's objects (AND-ed by Docker)."""
    return [f"{MANAGED}=true", f"{INSTANCE}={inst}"]
