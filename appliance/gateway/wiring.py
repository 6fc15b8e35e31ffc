"""How the runtime wires the gateway and the sample apps: app definitions, app keys, endpoints.

The runtime owns containers; this module owns what the gateway and the apps need from
it, so the contract lives in one place:

* :data:`APPS` -- each sample app's image build directory, listen port, health path, the
  model roles it needs and whether it keeps data (the knowledge base's SQLite vectors).
* :func:`ensure_app_key` -- the app's own scoped key, created once and kept in a 0600 file
  the runtime bind-mounts (as a directory, so a rotated key is seen without a restart).
  Idempotent: re-running ``init`` neither rotates the key nor changes any container.
* :func:`app_env` -- the environment an app container gets (no secret in it).
* :func:`stack_endpoints` -- ``{"gateway": url, "apps": {name: url}}`` for ``status --json``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

from appliance.errors import UsageError
from appliance.gateway import keys as K
from appliance.state.store import StateStore

GATEWAY_BUILD = "gateway"
GATEWAY_PORT = 8080
GATEWAY_HEALTH_PATH = "/healthz"
GATEWAY_CONFIG_TARGET = "/etc/appliance/gateway"
APP_PORT = 8080
APP_HEALTH_PATH = "/healthz"
APP_SECRETS_TARGET = "/run/appliance"
APP_KEY_FILENAME = "api_key"
APP_DATA_TARGET = "/data"


class AppDef(BaseModel):
    name: str
    title: str
    build: str = Field(description="images/ subdirectory of its image (appliance/app-<name>)")
    roles: list[str] = Field(description="model roles it calls through the gateway")
    port: int = APP_PORT
    health_path: str = APP_HEALTH_PATH
    needs_data_volume: bool = False
    rpm: int | None = Field(default=None, description="rate limit of its key")


APPS: dict[str, AppDef] = {
    "customer-service": AppDef(name="customer-service", title="Customer-service chat",
                               build="apps/customer-service", roles=["chat"], rpm=600),
    "knowledge-base": AppDef(name="knowledge-base", title="Knowledge base (RAG)", build="apps/knowledge-base",
                             roles=["chat", "embedding", "rerank"], needs_data_volume=True, rpm=1200),
    "code-assistant": AppDef(name="code-assistant", title="Code assistant", build="apps/code-assistant",
                             roles=["chat", "completion"], rpm=600),
}


class AppKey(BaseModel):
    app: str
    key_name: str
    key_id: str
    secrets_dir: str = Field(description=f"host directory to bind read-only at {APP_SECRETS_TARGET}")
    key_file: str
    created: bool = Field(description="True when a new key was made (first init, or the old one was lost)")


def app_key_name(app: str) -> str:
    return f"app-{app}"


def app_secrets_dir(app: str) -> Path:
    from appliance.paths import data_dir

    return data_dir() / "apps" / app / "secrets"


def ensure_app_key(app: str, models: list[str], *, store: StateStore | None = None,
                   secrets_dir: Path | None = None, owner_uid: int | None = None,
                   export_dir: Path | None = None) -> AppKey:
    """Make sure app ``app`` has a working key scoped to ``models``; create it at most once.

    The key is kept only in ``<secrets_dir>/api_key`` (mode 0600, owned by ``owner_uid``
    when given -- the uid the app container runs as). A new key is made, and the old one
    revoked, only when the file is missing, no longer verifies, or the scope changed.
    """
    if app not in APPS:
        raise UsageError(f"unknown app {app!r}", where="apps", fix=f"one of: {', '.join(APPS)}")
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
        return AppKey(app=app, key_name=name, key_id=info.key_id, secrets_dir=str(directory),
                      key_file=str(path), created=False)
    with store.transaction():
        active = store.query("SELECT 1 FROM api_keys WHERE name=? AND revoked_at IS NULL", (name,))
        if active:
            K.revoke_key(name, store=store, export_dir=export_dir)
        created = K.create_key(name, models=scope, rpm=APPS[app].rpm, owner=f"app:{app}", store=store,
                               export_dir=export_dir)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        tmp = directory / f".{APP_KEY_FILENAME}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(created.key + "\n")
        if owner_uid is not None:
            os.chown(tmp, owner_uid, -1)
            os.chown(directory, owner_uid, -1)
        os.replace(tmp, path)
    return AppKey(app=app, key_name=name, key_id=created.key_id, secrets_dir=str(directory),
                  key_file=str(path), created=True)


def app_env(app: str, *, gateway_url: str, public_gateway_url: str, chat_model: str | None,
            embedding_model: str | None = None, completion_model: str | None = None,
            rerank_model: str | None = None) -> dict[str, str]:
    """The environment of an app container (no secret: the key comes from the mounted file)."""
    env = {"PORT": str(APPS[app].port), "GATEWAY_URL": gateway_url, "GATEWAY_PUBLIC_URL": public_gateway_url,
           "APP_API_KEY_FILE": f"{APP_SECRETS_TARGET}/{APP_KEY_FILENAME}", "APP_TITLE": APPS[app].title}
    if chat_model:
        env["CHAT_MODEL"] = chat_model
    if embedding_model and "embedding" in APPS[app].roles:
        env["EMBED_MODEL"] = embedding_model
    if completion_model and "completion" in APPS[app].roles:
        env["COMPLETION_MODEL"] = completion_model
    if rerank_model and "rerank" in APPS[app].roles:
        env["RERANK_MODEL"] = rerank_model
    if APPS[app].needs_data_volume:
        env["APP_DATA_DIR"] = APP_DATA_TARGET
    return env


def gateway_env(port: int = GATEWAY_PORT) -> dict[str, str]:
    """The gateway container's environment (config dir mounted read-write at the target)."""
    return {"PORT": str(port), "GATEWAY_CONFIG_DIR": GATEWAY_CONFIG_TARGET}


def endpoints(gateway_url: str | None, app_urls: dict[str, str | None]) -> dict:
    """``{"gateway": url, "apps": {name: url}}``: the shape ``status --json`` reports."""
    return {"gateway": gateway_url, "apps": {name: url for name, url in sorted(app_urls.items()) if url}}


def endpoints_from_stack(stack) -> dict:
    """Endpoints from a runtime ``StackSpec``: the gateway's OpenAI base URL (``.../v1``, what
    clients paste) and each app's page URL, from the services' published host ports."""
    gateway = next((s.endpoint() for s in stack.services if s.kind == "gateway" and s.endpoint()), None)
    apps = {s.name: s.endpoint() + "/" for s in stack.services if s.kind == "app" and s.endpoint()}
    return endpoints(gateway + "/v1" if gateway else None, apps)


def gateway_reachable(url: str, timeout_s: float = 2.0) -> bool:
    """True when the gateway answers its health path (used by status; no key needed)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + GATEWAY_HEALTH_PATH, timeout=timeout_s) as resp:
            return resp.status == 200
    except OSError:
        return False


def stack_endpoints(store: StateStore | None = None, instance: str | None = None) -> dict:
    """Endpoints of the instance's active release (``{"gateway": None, "apps": {}}`` before init).

    For ``appliance status --json``: reads the recorded stack, never Docker.
    """
    from appliance.runtime.stack import current_release

    release = current_release(store=store, instance=instance)
    if release is None or release.stack is None:
        return endpoints(None, {})
    return endpoints_from_stack(release.stack)
