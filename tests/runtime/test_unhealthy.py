"""Health gating: a service that never becomes healthy fails init, shows its last log lines,
and leaves the previous release running (or nothing at all on a first install).

The broken engine is a copy of the shipped resources (APPLIANCE_RESOURCES) whose templated test
engine never answers /health with 200, under an image name of its own (in an edited copy of the
templated catalog overlay installed into the data dir), so no other stack on this Docker engine
can ever pick it up. The stacks plan the templated engine's models (``--models demo-chat,demo-embed``).
"""

from __future__ import annotations

import shutil
import uuid

import pytest

from tests.stack_support import (
    REPO,
    TEMPLATED_CATALOG,
    TEMPLATED_MODELS,
    free_port_block,
    install_templated,
    purge_instance,
    run_cli,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MARKER = "engine broken on purpose by test_unhealthy"


@pytest.fixture
def broken_resources(tmp_path):
    """A resources dir whose templated engine is never healthy, and the catalog overlay naming its
    image (install it with ``install_templated(data_dir, overlay)``); removes the image afterwards."""
    root = tmp_path / "resources"
    shutil.copytree(REPO / "images", root / "images",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / "playbooks").mkdir()
    engine = root / "images" / "demo" / "engine" / "main.py"
    text = engine.read_text()
    text = text.replace('FAIL_HEALTH = os.environ.get("DEMO_FAIL_HEALTH") == "1"', "FAIL_HEALTH = True")
    text = text.replace("def main(argv: list[str]) -> None:",
                        f"def main(argv: list[str]) -> None:\n    sys.stderr.write({MARKER!r} + '\\n')")
    assert "FAIL_HEALTH = True" in text and MARKER in text
    engine.write_text(text)
    image = f"appliance/test-broken-engine-{uuid.uuid4().hex[:8]}:0.1.0"
    overlay = tmp_path / "templated-broken.yaml"
    assert "appliance/demo-engine:0.1.0" in TEMPLATED_CATALOG.read_text()
    overlay.write_text(TEMPLATED_CATALOG.read_text().replace("appliance/demo-engine:0.1.0", image))
    yield root, image, overlay
    subprocess_rmi(image)


def subprocess_rmi(image: str) -> None:
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        d.remove_image(image)


@pytest.fixture
def inst_env(tmp_path):
    inst = f"t{uuid.uuid4().hex[:10]}"
    env = {"APPLIANCE_INSTANCE": inst, "APPLIANCE_DATA_DIR": str(tmp_path / "data")}
    yield inst, env
    purge_instance(inst)


def _objects(inst: str) -> tuple[list, list, list]:
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        flt = L.instance_filter(inst)
        return d.list_containers(flt), d.list_networks(flt), d.list_volumes(flt)


def test_first_install_that_never_gets_healthy_leaves_nothing(broken_resources, inst_env):
    root, _, overlay = broken_resources
    inst, env = inst_env
    install_templated(env["APPLIANCE_DATA_DIR"], overlay)
    res = run_cli("init", "--demo", "--yes", "--models", TEMPLATED_MODELS, "--health-timeout", "8",
                  "--gateway-port", str(free_port_block(1)),
                  "--app-port-base", str(free_port_block(3)), env={**env, "APPLIANCE_RESOURCES": str(root)})
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr
    assert "did not become healthy within 8s" in err
    assert "last log lines of" in err and MARKER in err          # the service's own output is shown
    assert err.strip().splitlines()[-1].startswith("error: service ")
    containers, networks, volumes = _objects(inst)
    assert (containers, networks, volumes) == ([], [], [])
    from appliance.runtime import releases
    from appliance.state.store import StateStore

    store = releases.open_store(StateStore(f"{env['APPLIANCE_DATA_DIR']}/state.db"))
    assert releases.current(store, inst) is None
    assert [r.status for r in releases.history(store, inst)] == ["failed"]


def test_failed_upgrade_keeps_the_previous_release_running(broken_resources, inst_env):
    root, _, overlay = broken_resources
    inst, env = inst_env
    ports = ["--gateway-port", str(free_port_block(1)), "--app-port-base", str(free_port_block(3))]
    install_templated(env["APPLIANCE_DATA_DIR"])
    first = run_cli("init", "--demo", "--yes", "--models", TEMPLATED_MODELS, *ports, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {c.service: (c.id, c.state) for c in _objects(inst)[0]}
    install_templated(env["APPLIANCE_DATA_DIR"], overlay)  # the upgrade: the broken engine's image
    res = run_cli("init", "--demo", "--yes", "--health-timeout", "8", *ports,
                  env={**env, "APPLIANCE_RESOURCES": str(root)})
    assert res.returncode == 1
    assert MARKER in res.stderr and "every change of this run was undone" in res.stderr
    after = {c.service: (c.id, c.state) for c in _objects(inst)[0]}
    assert after == before and all(state == "running" for _, state in after.values())
    from appliance.runtime import releases
    from appliance.state.store import StateStore

    store = releases.open_store(StateStore(f"{env['APPLIANCE_DATA_DIR']}/state.db"))
    assert releases.current(store, inst).id == 1
    assert [r.status for r in releases.history(store, inst)] == ["failed", "active"]


def test_a_busy_host_port_stops_init_at_preflight_before_any_change(inst_env):
    import socket

    inst, env = inst_env
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        install_templated(env["APPLIANCE_DATA_DIR"])
        res = run_cli("init", "--demo", "--yes", "--models", TEMPLATED_MODELS, "--gateway-port", str(port),
                      "--app-port-base", str(free_port_block(3)), env=env)
    assert res.returncode == 3, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: preflight ports:") and str(port) in res.stderr
    assert _objects(inst) == ([], [], [])
