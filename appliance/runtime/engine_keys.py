"""Each engine service's own secret, and the gateway's copy of them all: the one place they are written.

Why: an engine answers whoever reaches its address, so every inference service gets a random
secret (:data:`SECRET_BYTES`, URL-safe) that it requires on every request (how each engine is
given it: :data:`appliance.catalog.contract.KEY_INPUTS`); only the gateway has them all, in ONE
file of its config directory (``upstream_keys.json``, :func:`upstream_keys_doc`), and sends the
right one as ``Authorization: Bearer`` (routes.json names the service, never the secret).

* a secret is made once and kept in ``<data_dir>/engines/<service>/secrets/api_key`` (0600, the
  directory 0700, handed to the account the engine runs as -- root's for a vendor image); it is
  made again only when that file is lost or empty, never on a re-run of ``init``;
* ``upstream_keys.json`` is rewritten (atomically, 0600, the gateway's account) only when its
  content changes, so a re-run changes nothing and restarts nothing;
* the gateway's config directory itself is handed to the gateway's account (it writes its usage
  and sign-in files there).

Nothing here logs, records or returns a secret: the plan, the release record, routes.json and
``docker inspect`` never hold one. Called by the deploy pipeline before a stack is converged
(:func:`ensure_stack_secrets`); ``--dry-run`` lists what it would write (:func:`pending_changes`).
"""

from __future__ import annotations

import json
import os
import secrets as _random
from pathlib import Path

from appliance.atomic import write_atomic
from appliance.errors import StateError
from appliance.runtime import pyrt
from appliance.runtime.compose import (
    ENGINE_KEY_FILENAME,
    UPSTREAM_KEYS_FILENAME,
    UPSTREAM_KEYS_FORMAT,
    engine_secrets_dir,
    gateway_dir,
)
from appliance.runtime.models import Change, StackSpec
from appliance.runtime.ownership import hand_over, owner_uid, user_uid

SECRET_BYTES = 32
_FIX = "run as the appliance admin (root) or set APPLIANCE_DATA_DIR"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def engine_secret(service: str, root: Path | None = None) -> str:
    """The service's kept secret ('' when it has none yet)."""
    return _read(engine_secrets_dir(service, root) / ENGINE_KEY_FILENAME)


def _engine_uid(stack: StackSpec, service: str) -> int:
    """Whom an engine's secret belongs to: the account it runs as (ours), else root (a vendor image
    runs as its own user, root for every engine in the catalog)."""
    svc = stack.service(service)
    return user_uid(svc.user if svc else None) or 0


def ensure_engine_secret(service: str, *, uid: int, root: Path | None = None) -> tuple[str, bool]:
    """(secret, made now) for ``service``: the kept one, or a new one when it is lost."""
    directory = engine_secrets_dir(service, root)
    path = directory / ENGINE_KEY_FILENAME
    current = _read(path)
    owner = owner_uid(uid)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        if current:
            hand_over(directory, owner, recursive=True)
            return current, False
        secret = _random.token_urlsafe(SECRET_BYTES)
        write_atomic(path, secret + "\n", mode=0o600, owner_uid=owner, owner_gid=owner)
        hand_over(directory, owner)
    except OSError as exc:
        raise StateError(f"cannot write the secret of engine {service}: {exc.strerror or exc}", where=str(path),
                         fix=_FIX) from None
    return secret, True


def set_engine_secret(service: str, secret: str, root: Path | None = None) -> bool:
    """Make ``secret`` the kept secret of ``service`` (a cluster node: the controller chose it, so
    the head's gateway has the same). True when the file changed; it is handed to the engine's
    account by :func:`ensure_engine_secret` when the stack converges."""
    directory = engine_secrets_dir(service, root)
    path = directory / ENGINE_KEY_FILENAME
    if not secret or _read(path) == secret:
        return False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        write_atomic(path, secret + "\n", mode=0o600)
    except OSError as exc:
        raise StateError(f"cannot write the secret of engine {service}: {exc.strerror or exc}", where=str(path),
                         fix=_FIX) from None
    return True


def _remote_keys(stack: StackSpec, root: Path | None) -> dict[str, str]:
    """A cluster head's secrets of the workers' engines (kept by :func:`set_engine_secret`)."""
    return {r.key: engine_secret(r.key, root) for r in stack.settings.remote_engines
            if engine_secret(r.key, root)}


def upstream_keys_doc(keys: dict[str, str]) -> str:
    """upstream_keys.json: ``{"format": ..., "services": {service: secret}}`` (sorted, so the same
    secrets give the same bytes)."""
    return json.dumps({"format": UPSTREAM_KEYS_FORMAT, "services": dict(sorted(keys.items()))},
                      indent=1, sort_keys=True) + "\n"


def _secret_change(service: str, root: Path | None) -> Change:
    return Change(action="write-config", target=str(engine_secrets_dir(service, root) / ENGINE_KEY_FILENAME),
                  detail=f"secret of engine {service} (only the gateway has it)")


def _engines(stack: StackSpec) -> list[str]:
    return [s.name for s in stack.services if s.kind == "inference"]


def ensure_stack_secrets(stack: StackSpec, root: Path | None = None) -> list[Change]:
    """Every engine of ``stack`` has its secret, and the gateway (if the stack has one) all of them
    in ``upstream_keys.json``; the gateway's directory is its account's. Returns what was written
    (targets only, no secret)."""
    changes: list[Change] = []
    keys: dict[str, str] = {}
    for name in _engines(stack):
        keys[name], made = ensure_engine_secret(name, uid=_engine_uid(stack, name), root=root)
        if made:
            changes.append(_secret_change(name, root))
    gateway = stack.service("gateway")
    if gateway is None:
        return changes
    keys.update(_remote_keys(stack, root))
    directory = gateway_dir(root)
    path = directory / UPSTREAM_KEYS_FILENAME
    gw_owner = owner_uid(user_uid(gateway.user) or pyrt.GATEWAY_UID)
    text = upstream_keys_doc(keys)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if _read(path) + "\n" != text:
            write_atomic(path, text, mode=0o600, owner_uid=gw_owner, owner_gid=gw_owner)
            changes.append(Change(action="write-config", target=str(path),
                                  detail=f"the engines' secrets for the gateway ({len(keys)} service(s))"))
        elif (path.stat().st_mode & 0o777) != 0o600:
            os.chmod(path, 0o600)
        os.chmod(directory, 0o700)
        # the gateway writes usage.json and its sign-in files here; what the CLI wrote is readable to it
        hand_over(directory, gw_owner, recursive=True)
    except OSError as exc:
        raise StateError(f"cannot write the gateway's upstream keys: {exc.strerror or exc}", where=str(path),
                         fix=_FIX) from None
    return changes


def pending_changes(stack: StackSpec, root: Path | None = None) -> list[Change]:
    """What :func:`ensure_stack_secrets` would write now (``--dry-run``); reads, writes nothing."""
    changes = []
    keys = {}
    for name in _engines(stack):
        keys[name] = engine_secret(name, root)
        if not keys[name]:
            changes.append(_secret_change(name, root))
    keys.update(_remote_keys(stack, root))
    path = gateway_dir(root) / UPSTREAM_KEYS_FILENAME
    if stack.service("gateway") is not None and (changes or _read(path) + "\n" != upstream_keys_doc(keys)):
        changes.append(Change(action="write-config", target=str(path),
                              detail=f"the engines' secrets for the gateway ({len(keys)} service(s))"))
    return changes
