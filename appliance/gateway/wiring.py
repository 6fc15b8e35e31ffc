"""Each sample app's own API key: created once, scoped to the models the app uses, kept in a file.

How an app is wired (image, ports, health path, data volume, the models bound to its roles)
is the catalog's (``images/catalog/apps.yaml``) and the runtime's composition
(:func:`appliance.runtime.compose.compose`); this module owns only the app's key:

* :func:`ensure_app_key` -- the app's scoped key, created once and kept in a 0600 file the
  runtime bind-mounts (as a directory, so a rotated key is seen without a restart).
  Idempotent: re-running ``init`` neither rotates the key nor changes any container.
* :func:`ensure_app_keys` -- the same for every app of a stack, plus the gateway's
  ``keys.json``; called by the deploy pipeline before the stack is converged.
* :func:`gateway_reachable` -- is the gateway answering its health path.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

from appliance.atomic import write_atomic
from appliance.errors import StateError
from appliance.gateway import keys as K
from appliance.runtime import ownership, pyrt
from appliance.runtime.compose import APP_KEY_FILENAME, APP_SECRETS_TARGET, app_secrets_dir
from appliance.runtime.ownership import hand_over
from appliance.state.store import StateStore


class AppKey(BaseModel):
    app: str
    key_name: str
    key_id: str
    secrets_dir: str = Field(description=f"host directory to bind read-only at {APP_SECRETS_TARGET}")
    key_file: str
    created: bool = Field(description="True when a new key was made (first init, or the old one was lost)")


def app_key_name(app: str) -> str:
    return f"app-{app}"


def ensure_app_key(app: str, models: list[str], *, rpm: int | None = None, store: StateStore | None = None,
                   secrets_dir: Path | None = None, owner_uid: int | None = None,
                   export_dir: Path | None = None) -> AppKey:
    """Make sure app ``app`` has a working key scoped to ``models``; create it at most once.

    The key is kept only in ``<secrets_dir>/api_key`` (mode 0600, owned by ``owner_uid``
    when given -- the uid the app container runs as; a kept key is handed to it too). A new key
    is made, and the old one revoked, only when the file is missing, no longer verifies, or the
    scope changed.
    """
    store = K._open(store)
    directory = Path(secrets_dir) if secrets_dir else app_secrets_dir(app)
    path = directory / APP_KEY_FILENAME
    name = app_key_name(app)
    scope = sorted(set(models))
    try:
        current = path.read_text().strip()
    except OSError:
        current = ""
    info = K.verify_key(current, store=store) if current else None
    if info is not None and info.name == name and sorted(info.models) == scope:
        try:  # a key kept from before the app ran as its own account is handed to it now
            hand_over(directory, owner_uid, recursive=True)
        except OSError as exc:
            raise StateError(f"cannot hand the key file of app {app} to uid {owner_uid}: {exc.strerror or exc}",
                             where=str(path), fix="run as the appliance admin (root)") from None
        return AppKey(app=app, key_name=name, key_id=info.key_id, secrets_dir=str(directory),
                      key_file=str(path), created=False)
    with store.transaction():
        active = store.query("SELECT 1 FROM api_keys WHERE name=? AND revoked_at IS NULL", (name,))
        if active:
            K.revoke_key(name, store=store, export_dir=export_dir)
        created = K.create_key(name, models=scope, rpm=rpm, owner=f"app:{app}", store=store,
                               export_dir=export_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
            if owner_uid is not None:
                os.chown(directory, owner_uid, owner_uid)
            write_atomic(path, created.key + "\n", mode=0o600, owner_uid=owner_uid, owner_gid=owner_uid)
        except OSError as exc:  # the transaction rolls the new key back: no orphan key
            raise StateError(f"cannot write the key file of app {app}: {exc.strerror or exc}", where=str(path),
                             fix="run as the appliance admin (root) or set APPLIANCE_DATA_DIR") from None
    return AppKey(app=app, key_name=name, key_id=created.key_id, secrets_dir=str(directory),
                  key_file=str(path), created=True)


def ensure_app_keys(stack, catalog, store: StateStore, root: Path | None = None) -> list[AppKey]:
    """Every app of ``stack`` gets its key (scoped to the models it serves, rate-limited as the
    catalog says), owned by the account its container runs as; then the gateway's ``keys.json``
    is exported. Returns the keys made now."""
    made = []
    for name in stack.apps:
        svc = stack.service(name)
        app = catalog.apps.get(name)
        res = ensure_app_key(name, list(svc.served_models), rpm=app.key_rpm if app else None, store=store,
                             secrets_dir=app_secrets_dir(name, root),
                             owner_uid=ownership.owner_uid(ownership.user_uid(svc.user) or pyrt.APP_UID))
        if res.created:
            made.append(res)
    if stack.service("gateway") is not None:
        K.export_keys_file(store=store)
    return made


def gateway_reachable(url: str, timeout_s: float = 2.0, health_path: str = "/healthz") -> bool:
    """True when the gateway answers its health path (no key needed)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + health_path, timeout=timeout_s) as resp:
            return resp.status == 200
    except OSError:
        return False
