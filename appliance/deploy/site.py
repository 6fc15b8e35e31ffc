"""The site configuration and the installed version: what every later deploy starts from.

Why persisted: an installer chooses a bind address, ports, models and a profile once (often
with flags nobody remembers a year later). Re-running ``appliance init`` without those flags
must not move the endpoints or drop a served fine-tuned model, and an upgrade must keep them.
So the choices live in the state, shown by ``appliance config show`` and changed by
``appliance config set`` or by ``init`` flags (which say what they change).

The **installed version** is separate state the bundle package owns
(:func:`appliance.bundle.journal.installed`): the bundle version the box runs, with the release
directory its catalog, playbooks and packages come from. Only ``upgrade`` and ``rollback``
change it; ``init`` and ``serve`` record their releases under it, so re-running ``init`` can
never make an older bundle look like an upgrade. ``down --purge`` keeps both (it removes Docker
objects only).
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

from pydantic import Field, ValidationError, field_validator

from appliance.errors import UsageError
from appliance.runtime.models import Settings
from appliance.state.store import StateStore

DOMAIN = "deploy"
VERSION = 1
_DDL = """
CREATE TABLE IF NOT EXISTS site_config (
    instance TEXT PRIMARY KEY,
    config_json TEXT NOT NULL,
    updated_ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS site_by_release (
    instance TEXT NOT NULL,
    release INTEGER NOT NULL,
    config_json TEXT NOT NULL,
    PRIMARY KEY (instance, release)
)
"""


class SiteConfig(Settings):
    """The installer's choices (the runtime ``Settings`` that shape the stack, plus what to serve).

    ``models`` None means "the catalog's default set for this node"; ``served`` are fine-tuned
    models added with ``appliance serve`` (planned after the chosen ones, so they keep their
    ports when a model is added).
    """

    models: list[str] | None = Field(default=None, description="models to serve; null: the catalog's default set")
    served: list[str] = Field(default_factory=list, description="fine-tuned models added by `appliance serve`")
    profile: str = Field(default="default", description="planner profile")
    demo: bool = Field(default=False, description="the built-in CPU demo stack")

    @field_validator("bind_ip")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address (use e.g. 127.0.0.1, 0.0.0.0 or ::)") from None

    def stack_settings(self) -> Settings:
        """The part of the configuration the runtime's stack records."""
        return Settings(**{k: getattr(self, k) for k in Settings.model_fields})

    def wanted_models(self) -> list[str] | None:
        """The planner's ``models``: the chosen ones, then the served fine-tuned ones (None: default)."""
        if self.models is None:
            return None
        return list(dict.fromkeys([*self.models, *self.served]))


# Keys `appliance config set` accepts, with how a value is read from the command line.
SETTABLE: dict[str, str] = {
    "bind_ip": "an IP address of this host (0.0.0.0 / :: for every interface)",
    "gateway_port": "1-65535",
    "app_port_base": "1-65535, or 'none' for each app's catalog port",
    "health_timeout_s": "seconds, or 'none' for each service's own",
    "models": "comma-separated catalog model ids, or 'default'",
    "profile": "a planner profile (default, throughput, latency)",
    "demo": "true or false",
}


def open_store(store: StateStore | None = None) -> StateStore:
    store = store or StateStore.open_default()
    store.ensure_schema(DOMAIN, VERSION, _DDL)
    return store


def load(store: StateStore, instance: str) -> SiteConfig | None:
    """The recorded configuration of ``instance`` (None before the first deploy)."""
    row = open_store(store).one("SELECT config_json FROM site_config WHERE instance=?", (instance,))
    if row is None:
        return None
    return SiteConfig.model_validate_json(row["config_json"])


def save(store: StateStore, instance: str, config: SiteConfig) -> None:
    store = open_store(store)
    with store.transaction() as conn:
        conn.execute("INSERT INTO site_config(instance, config_json, updated_ts) VALUES(?,?,?) "
                     "ON CONFLICT(instance) DO UPDATE SET config_json=excluded.config_json, "
                     "updated_ts=excluded.updated_ts", (instance, config.model_dump_json(), time.time()))


def save_for_release(store: StateStore, instance: str, release: int, config: SiteConfig) -> None:
    """The configuration a release was deployed with (``rollback`` returns to it)."""
    store = open_store(store)
    with store.transaction() as conn:
        conn.execute("INSERT INTO site_by_release(instance, release, config_json) VALUES(?,?,?) "
                     "ON CONFLICT(instance, release) DO UPDATE SET config_json=excluded.config_json",
                     (instance, release, config.model_dump_json()))


def load_for_release(store: StateStore, instance: str, release: int) -> SiteConfig | None:
    row = open_store(store).one("SELECT config_json FROM site_by_release WHERE instance=? AND release=?",
                                (instance, release))
    return SiteConfig.model_validate_json(row["config_json"]) if row else None


def differences(old: SiteConfig, new: SiteConfig) -> list[str]:
    """Human lines for what changes between two configurations (``gateway_port: 8080 -> 9090``)."""
    out = []
    for key in SiteConfig.model_fields:
        a, b = getattr(old, key), getattr(new, key)
        if a != b:
            out.append(f"{key}: {_show(a)} -> {_show(b)}")
    return out


def _show(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, list):
        return ",".join(str(getattr(v, "key", v)) for v in value) or "(none)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def host_addresses() -> set[str]:
    """Every IP address this host's interfaces carry (what a bind address may be)."""
    import socket

    import psutil

    out: set[str] = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    out.add(str(ipaddress.ip_address(a.address.split("%", 1)[0])))
                except ValueError:
                    continue
    return out


def check_bind(ip: str, *, where: str, addresses: set[str] | None = None) -> None:
    """A bind address must be one of this host's (or 0.0.0.0 / :: for every interface, or a
    loopback address): Docker publishing on an address the host lacks fails late or, worse,
    publishes somewhere the installer did not mean."""
    addr = ipaddress.ip_address(ip)
    if addr.is_unspecified or addr.is_loopback:
        return
    have = host_addresses() if addresses is None else addresses
    if str(addr) not in have:
        shown = ", ".join(sorted(a for a in have if not ipaddress.ip_address(a).is_link_local))
        raise UsageError(f"bind_ip: {ip} is not an address of this host", where=where,
                         fix=f"use one of {shown or '127.0.0.1'}, or 0.0.0.0 / :: for every interface")


def merge(base: SiteConfig, changes: dict[str, Any], *, where: str = "options",
          addresses: set[str] | None = None) -> SiteConfig:
    """``base`` with ``changes`` applied and validated; one-line UsageError naming the field. A
    bind address given here must be one of this host's (:func:`check_bind`)."""
    data = base.model_dump()
    data.update(changes)
    try:
        merged = SiteConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or "config"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        raise UsageError(f"{field}: {msg}", where=where,
                         fix=f"{field} takes {SETTABLE.get(field, 'a valid value')}") from None
    if "bind_ip" in changes:
        check_bind(merged.bind_ip, where=where, addresses=addresses)
    return merged


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """``["gateway_port=9090", "models=a,b"]`` -> typed changes (for ``appliance config set``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in SETTABLE:
            raise UsageError(f"cannot set {pair!r}", where="config set",
                             fix=f"use KEY=VALUE with KEY one of: {', '.join(SETTABLE)}")
        raw = raw.strip()
        if key in ("app_port_base", "health_timeout_s"):
            out[key] = None if raw.lower() in ("", "none", "default") else raw
        elif key == "models":
            out[key] = None if raw.lower() in ("", "default") else [m.strip() for m in raw.split(",") if m.strip()]
        elif key == "demo":
            if raw.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise UsageError(f"demo: {raw!r} is not true or false", where="config set",
                                 fix="demo=true or demo=false")
            out[key] = raw.lower() in ("true", "yes", "1")
        else:
            out[key] = raw
    return out


def describe(config: SiteConfig) -> dict:
    """The configuration as ``config show --json`` prints it."""
    return json.loads(config.model_dump_json())
