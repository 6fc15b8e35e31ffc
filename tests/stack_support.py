"""Support for the tests (and benchmarks) that run a real demo stack on the Docker engine.

The stacks run the templated TEST engine by default (``demo-chat`` + ``demo-embed``: canned
answers, fault injection, ready in well under a second). It is not shipped: it comes from the
catalog overlay :data:`TEMPLATED_CATALOG` that :func:`install_templated` puts into a data dir
(``<data_dir>/catalog/``, merged into the shipped catalog by ``load_catalog()``).
``DemoStack(..., templated=False)`` runs the real built-in stack (plain ``init --demo``).

Why one module: every such test needs the same four things -- a unique ``APPLIANCE_INSTANCE``
so concurrent runs and other stacks are never touched, its own ``APPLIANCE_DATA_DIR``, free
host ports, and a purge of everything carrying its instance label afterwards -- and drives
the CLI as a whole process (``python3 -m appliance``), as an admin would.

Import it as ``from tests.stack_support import ...`` (tests/conftest.py puts the checkout on
``sys.path``; benchmarks do the same). No pytest here, so benchmarks can use it too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support import poll

REPO = Path(__file__).resolve().parents[1]
# the templated test engine, its models (demo-chat, demo-embed) and the demo trainer recipes
TEMPLATED_CATALOG = REPO / "tests" / "fixtures" / "catalog" / "templated.yaml"
TEMPLATED_MODELS = "demo-chat,demo-embed"  # what `init --demo --models ...` plans on the templated engine


def install_templated(data_dir: str | os.PathLike, source: str | os.PathLike | None = None) -> Path:
    """Copy the templated catalog overlay into ``<data_dir>/catalog/templated.yaml`` (the node's
    local catalog additions): the templated engine, ``demo-chat``/``demo-embed`` and the demo
    trainer recipes become plannable for processes using that data dir. ``source``: an edited
    copy of :data:`TEMPLATED_CATALOG` instead (a broken engine's image, say). Returns the copy."""
    target = Path(data_dir) / "catalog" / "templated.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source or TEMPLATED_CATALOG, target)
    return target


def templated_catalog():
    """The shipped catalog with the templated overlay merged (for in-process planner calls that
    are given a catalog): loaded through a throw-away data dir, this process's environment
    unchanged afterwards."""
    import tempfile

    from appliance.catalog import load_catalog

    saved = os.environ.get("APPLIANCE_DATA_DIR")
    with tempfile.TemporaryDirectory(prefix="appliance-templated-") as tmp:
        install_templated(tmp)
        os.environ["APPLIANCE_DATA_DIR"] = tmp
        try:
            return load_catalog(use_cache=False)
        finally:
            if saved is None:
                os.environ.pop("APPLIANCE_DATA_DIR", None)
            else:
                os.environ["APPLIANCE_DATA_DIR"] = saved


def free_port_block(count: int = 1) -> int:
    """A base port such that base .. base+count-1 are free on 127.0.0.1 now (best effort)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65000:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port block")


def unique_instance(prefix: str) -> str:
    """An instance name no other run uses (``prefix`` says which suite made it)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python3 -m appliance ARGS`` from the checkout, with ``env`` over this process's environment."""
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=str(REPO))


_CURRENT = object()


def purge_instance(inst: str, docker_host: str | None | object = _CURRENT) -> None:
    """Remove every container, network and volume labelled ``appliance.instance=inst``.

    ``docker_host``: the engine to purge on, when it may differ from the current ``DOCKER_HOST``
    -- a session fixture set up by a docker test can be torn down after a test that sees no engine
    (tests/conftest.py), so it passes the ``DOCKER_HOST`` it saw at setup (None: the default)."""
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    saved = os.environ.get("DOCKER_HOST")
    if docker_host is not _CURRENT:
        os.environ.pop("DOCKER_HOST", None)
        if docker_host is not None:
            os.environ["DOCKER_HOST"] = str(docker_host)
    try:
        with Docker() as d:
            for c in d.list_containers(L.instance_filter(inst)):
                d.remove(c.id, force=True)
            for n in d.list_networks(L.instance_filter(inst)):
                d.remove_network(n["id"])
            for v in d.list_volumes(L.instance_filter(inst)):
                d.remove_volume(v["name"])
    finally:
        os.environ.pop("DOCKER_HOST", None)
        if saved is not None:
            os.environ["DOCKER_HOST"] = saved


def wait_for(predicate, timeout_s: float, interval_s: float = 0.25):
    """``predicate()``'s first truthy value within ``timeout_s``, else its last value
    (bounded polling, :func:`tests.support.poll`; :func:`tests.support.wait_until` raises instead)."""
    return poll(predicate, timeout_s, interval_s)[0]


class DemoStack:
    """One throw-away stack: a unique instance, ``<root>/data``, free gateway and app ports.

    ``templated`` (default): the data dir gets the templated catalog overlay and
    :meth:`init_demo` plans ``demo-chat`` + ``demo-embed`` on the templated test engine;
    ``templated=False``: the real built-in stack (``init --demo`` as a user runs it).

    ``env`` holds only what differs from this process (instance, data dir and, with
    ``ports_in_env``, ``APPLIANCE_GATEWAY_PORT``/``APPLIANCE_APP_PORT_BASE``); without it the
    ports go to ``init`` as ``--gateway-port``/``--app-port-base``.
    """

    def __init__(self, root: Path, prefix: str, *, ports_in_env: bool = True, templated: bool = True):
        self.instance = unique_instance(prefix)
        self.root = root
        self.data_dir = root / "data"
        self.gateway_port = free_port_block(1)
        self.app_port_base = free_port_block(3)
        self.ports_in_env = ports_in_env
        self.templated = templated
        if templated:
            install_templated(self.data_dir)
        self.env = {"APPLIANCE_INSTANCE": self.instance, "APPLIANCE_DATA_DIR": str(self.data_dir)}
        if ports_in_env:
            self.env.update(APPLIANCE_GATEWAY_PORT=str(self.gateway_port),
                            APPLIANCE_APP_PORT_BASE=str(self.app_port_base))
        self.gateway = f"http://127.0.0.1:{self.gateway_port}"

    def cli(self, *args: str, env: dict | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess:
        return run_cli(*args, env={**self.env, **(env or {})}, timeout=timeout_s)

    def init_demo(self, *extra: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
        """``appliance init --demo --yes EXTRA`` for this stack (not checked: callers assert); a
        templated stack adds ``--models demo-chat,demo-embed`` (unless EXTRA names models)."""
        ports = [] if self.ports_in_env else ["--gateway-port", str(self.gateway_port),
                                              "--app-port-base", str(self.app_port_base)]
        models = []
        if self.templated:
            install_templated(self.data_dir)  # again: a test may have emptied the data dir since
            if not any(a == "--models" or a.startswith("--models=") for a in extra):
                models = ["--models", TEMPLATED_MODELS]
        return self.cli("init", "--demo", "--yes", *models, *ports, *extra, timeout_s=timeout_s)

    def purge(self, *, down_first: bool = False) -> None:
        """Everything of the instance removed; ``down_first`` goes through ``appliance down --purge``
        first, as a user would (the label purge then catches anything it left)."""
        if down_first:
            self.cli("down", "--purge", "--yes", timeout_s=300)
        purge_instance(self.instance)

    def use_in_process(self, monkeypatch) -> None:
        """Library calls in the test process act on this stack (its instance and data dir)."""
        monkeypatch.setenv("APPLIANCE_INSTANCE", self.instance)
        monkeypatch.setenv("APPLIANCE_DATA_DIR", str(self.data_dir))
