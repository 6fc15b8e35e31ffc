"""The engine command of a planned service, built from the catalog's data and its argument contract.

Why a module of its own: the same facts build the command (:func:`build_args`), write a
config-file engine's settings (:func:`config_script`, MindIE) and feed the contract check
(:func:`contract_command`), so the command the runtime starts and the command the tests hold
to the contract cannot drift apart.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, NamedTuple

from appliance.catalog.contract import Command, KeyInput, role_args
from appliance.catalog.schema import Catalog, ConfigFile, Engine, EngineImage, WeightsConversion
from appliance.paths import DERIVED_DIR
from appliance.planner.models import PlannedConversion, PlannedService

# What the start script runs inside a config-file engine's image to set dotted keys in its
# JSON config (argv: file, edits as JSON). A list on the way is entered at its first item (MindIE's
# ModelConfig is a one-model list). Vendor MindIE images ship python3 (MindIE is Python).
_APPLY = ("import json,sys\n"
          "p,e=sys.argv[1],json.loads(sys.argv[2])\n"
          "c=json.load(open(p))\n"
          "for k,v in e.items():\n"
          " *a,b=k.split('.');d=c\n"
          " for x in a:d=d[x][0] if isinstance(d[x],list) else d[x]\n"
          " d[b]=v\n"
          "json.dump(c,open(p,'w'),indent=2)")


def fill(template: str, values: dict[str, str]) -> str:
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


def build_args(eng: Engine, image: EngineImage, catalog: Catalog, role: str, precision: str,
               trust_remote_code: bool) -> list[str]:
    """The engine's argument templates for this image: its base args, the role's arguments (the
    engine's own ``role_args`` when it sets them, else the contract's for the image's engine
    version), precision and remote-code args. Either way the contract check holds the result."""
    start = eng.start
    if role in start.role_args:
        chosen = list(start.role_args[role])  # type: ignore[index]
    else:
        chosen = role_args(catalog.contracts.get(eng.service), image.contract_version, role) or []
    args = list(start.args) + chosen
    args += list(start.precision_args.get(precision, []))
    if trust_remote_code:
        args += start.trust_remote_code_args
    return args


def config_edits(config: ConfigFile, values: dict[str, str]) -> dict[str, Any]:
    """Dotted key -> value with templates filled; a filled template that reads as a JSON number
    or list becomes one (``{port}`` -> 1025, ``[{devices}]`` -> [0, 1])."""
    out: dict[str, Any] = {}
    for key, value in config.set.items():
        if isinstance(value, str) and "{" in value:
            text = fill(value, values)
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
            out[key] = parsed if isinstance(parsed, (int, float, list)) else text
        else:
            out[key] = value
    return out


def config_script(config: ConfigFile, edits: dict[str, Any]) -> str:
    """The start script: edit the config file, then exec the engine (one shell line)."""
    return (f"cd {shlex.quote(config.workdir)} && python3 -c {shlex.quote(_APPLY)} {shlex.quote(config.path)} "
            f"{shlex.quote(json.dumps(edits, sort_keys=True))} && exec {config.exec}")


def plan_conversion(conv: WeightsConversion, model_path: str, models_dir, cand) -> PlannedConversion:
    """Where an engine's converted weights go (beside the store's views, one directory per model,
    precision, engine and TP degree: a different TP needs a different conversion) and the command."""
    output = str(Path(models_dir) / DERIVED_DIR / cand.model / cand.precision / f"{cand.engine}-tp{cand.tp}")
    values = {"source_path": model_path, "output_path": output, "tp": str(cand.tp)}
    return PlannedConversion(tool=conv.tool, entrypoint=[fill(a, values) for a in conv.entrypoint],
                             command=[fill(a, values) for a in conv.args], source_path=model_path,
                             output_path=output, timeout_s=conv.timeout_s)


def shares_devices(svc: PlannedService, services: list[PlannedService]) -> bool:
    mine = {(d.vendor, d.index) for d in svc.devices}
    return bool(mine) and any(o is not svc and mine & {(d.vendor, d.index) for d in o.devices} for o in services)


def add_shared_env(services: list[PlannedService], catalog: Catalog) -> list[PlannedService]:
    """Services that share a device get their engine's ``shared_device_env`` (MetaX MPS mode)."""
    out = []
    for svc in services:
        extra = catalog.engines[svc.engine].start.shared_device_env if svc.engine in catalog.engines else {}
        if extra and shares_devices(svc, services):
            svc = svc.model_copy(update={"env": dict(sorted({**svc.env, **extra}.items()))})
        out.append(svc)
    return out


class KeyLaunch(NamedTuple):
    """A service's start with its key: entrypoint, command and environment (see :func:`key_launch`)."""

    entrypoint: list[str]
    command: list[str]
    env: dict[str, str]
    applied: bool            # False: the engine takes no key (or cannot be wrapped), started as planned


# The start wrapper for engines that take the key itself (KeyInput env / flag): POSIX sh builtins
# only (read, export, exec), the key file is $0, the engine's argv follows. The key is read inside
# the container at start, so no `docker inspect` shows it; an unreadable or empty file stops the
# start with one line (the engine must never come up without its key).
_KEY_READ = ('IFS= read -r K < "$0"; [ -n "$K" ] || { echo "error: cannot read the engine key file $0 '
             '(appliance mounts it read-only; re-run appliance init)" >&2; exit 1; }; ')


def key_launch(key: KeyInput | None, entrypoint: list[str], command: list[str], env: dict[str, str],
               key_file: str) -> KeyLaunch:
    """How to start an engine so that it requires the secret in ``key_file`` (a container path).

    ``file_flag`` adds ``FLAG key_file`` to the command and ``file_env`` sets ``NAME=key_file``
    (the engine reads the file itself); ``env`` and ``flag`` wrap the planned entrypoint in
    ``/bin/sh -c`` (:data:`_KEY_READ`), which exports ``NAME`` or appends ``FLAG <key>`` and
    ``exec``s the engine -- possible only when the catalog names the entrypoint (an image's own
    ENTRYPOINT is not known here; tests/catalog/test_contracts.py holds every such engine to it).
    """
    if key is None:
        return KeyLaunch(list(entrypoint), list(command), dict(env), False)
    if key.kind == "file_flag":
        return KeyLaunch(list(entrypoint), [*command, key.name, key_file], dict(env), True)
    if key.kind == "file_env":
        return KeyLaunch(list(entrypoint), list(command), {**env, key.name: key_file}, True)
    if not entrypoint:
        return KeyLaunch(list(entrypoint), list(command), dict(env), False)
    then = f'export {key.name}="$K"; exec "$@"' if key.kind == "env" else f'exec "$@" {key.name} "$K"'
    return KeyLaunch(["/bin/sh", "-c", _KEY_READ + then, key_file, *entrypoint], list(command), dict(env), True)


def contract_command(svc: PlannedService, services: list[PlannedService] | None = None,
                     key: KeyInput | None = None) -> Command:
    """The contract check's view of a planned service; with ``key``, as it starts with its key
    (a ``flag``/``file_flag`` key input is then one of its arguments, held to the contract too)."""
    ctx = svc.memory.context_tokens if svc.memory else None
    conc = svc.memory.concurrency if svc.memory else None
    values = {"tp": svc.tensor_parallel}
    if ctx:
        values["context"] = ctx
        values["context_total"] = ctx * (conc or 1)
    if conc:
        values["concurrency"] = conc
    args = list(svc.command)
    if key is not None and key.kind in ("flag", "file_flag"):
        args += [key.name, "<key>" if key.kind == "flag" else "/run/key"]
    return Command(name=svc.name, role=svc.role, backend=svc.backend, entrypoint=list(svc.entrypoint),
                   args=args, env=dict(svc.env), values=values, config=svc.config,
                   shares_devices=shares_devices(svc, services or [svc]))
