"""Shared test fixtures. Each area keeps its own tests (and conftest) in tests/<area>/.

Tiers. Markers (declared in pyproject.toml) say what a test needs beyond this process:
``docker`` (the real Docker engine), ``ansible`` (real playbooks through ansible-runner),
``browser`` (a real headless Chromium); ``slow`` says it takes more than a few seconds.
The fast tier is every test that needs none of the three (see tests/README.md)::

    python3 -m pytest -q -m "not docker and not ansible and not browser"

The markers are reliable, not a convention:

- a test is marked ``docker`` here when it uses a fixture that needs the engine
  (``DOCKER_FIXTURES``), besides the modules that mark themselves (``pytestmark``) and
  tests/bundle (its conftest);
- a test WITHOUT the ``docker`` marker runs with ``DOCKER_HOST`` set to a socket that does not
  exist (``NO_ENGINE``), in this process and in every process it starts, so one that talks to
  Docker fails ("cannot reach the Docker engine at unix:///nonexistent/...") instead of
  passing in the fast tier by luck;
- a test WITHOUT the ``ansible`` marker fails if a playbook run left its directory
  (``<data dir>/ansible/``) in the data directory the test was given.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # --import-mode=importlib: `from tests.stack_support import ...` (shared helpers)
    sys.path.insert(0, str(REPO))
from tests.support import H200  # noqa: E402 - after the sys.path line above

# fixtures that need the engine: a test using one (directly or through another fixture) is `docker`
DOCKER_FIXTURES = frozenset({
    "docker",         # tests/runtime: a connected Docker client
    "docker_engine",  # tests/bundle: the same, session-wide
    "instance",       # tests/runtime, tests/train: purges the instance's containers through the engine
})
NO_ENGINE = "unix:///nonexistent/only-tests-marked-docker-reach-the-docker-engine.sock"
_DOCKER_HOST = os.environ.get("DOCKER_HOST")  # the engine of this run, for the docker tests


def pytest_configure(config):
    # also declared in pyproject.toml; registered here so the marker works whatever that file says
    config.addinivalue_line("markers", "browser: drives a real headless Chromium")
    # No test may provision the machine it runs on (users, sysctl, Docker's daemon.json): the
    # playbooks run for real only into temporary roots (--root) or in check mode. This process
    # and every process it starts inherit the interlock (appliance/provision/site.py).
    os.environ["APPLIANCE_NO_LIVE_PROVISION"] = "1"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("docker") is None and DOCKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Setup, call and teardown of a test without the docker marker see no engine (NO_ENGINE)."""
    if item.get_closest_marker("docker") is not None:
        yield
        return
    before = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = NO_ENGINE
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = before


@pytest.fixture(autouse=True)
def _isolated_data_dir(request, tmp_path_factory, monkeypatch):
    """Every test gets its own APPLIANCE_DATA_DIR so no test touches /var/lib/appliance.

    A test without the ``ansible`` marker must not run a playbook: its runs would be under
    ``<data dir>/ansible/`` (appliance.provision.runner.runs_dir)."""
    own = None
    if "APPLIANCE_DATA_DIR" not in os.environ or os.environ.get("APPLIANCE_TEST_KEEP_DATA_DIR") != "1":
        own = tmp_path_factory.mktemp("appliance-data")
        monkeypatch.setenv("APPLIANCE_DATA_DIR", str(own))
    yield
    runs = own / "ansible" if own is not None else None
    if runs is not None and request.node.get_closest_marker("ansible") is None and runs.is_dir() \
            and any(runs.iterdir()):
        pytest.fail(f"{request.node.nodeid} ran ansible-playbook ({runs}) but is not marked `ansible`: "
                    "mark it (pytestmark = [pytest.mark.ansible]) so the fast tier leaves it out", pytrace=False)


@pytest.fixture
def h200_snapshot() -> Path:
    return H200


MANAGED_IMAGES = ["appliance.managed=true"]


def _engine():
    """A client of this run's engine (the DOCKER_HOST the run started with, not NO_ENGINE)."""
    from appliance.runtime.docker_adapter import Docker

    saved = os.environ.get("DOCKER_HOST")
    if _DOCKER_HOST is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = _DOCKER_HOST
    try:
        return Docker()
    finally:
        if saved is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = saved


def _managed_image_ids() -> set[str] | None:
    """Ids of images appliance built (label appliance.managed=true), or None without Docker."""
    try:
        with _engine() as d:
            return {i["id"] for i in d.list_images(MANAGED_IMAGES)}
    except Exception:  # noqa: BLE001 - no engine here: nothing to clean
        return None


@pytest.fixture(scope="session", autouse=True)
def _remove_images_built_by_the_tests(request):
    """Leave the engine as the suite found it: images the tests built (init, bundles, training)
    are removed at the end; images that existed before the run are kept. A run without docker
    tests (the fast tier) never contacts the engine."""
    if not any(item.get_closest_marker("docker") for item in request.session.items):
        yield
        return
    before = _managed_image_ids()
    yield
    if before is None:
        return
    from docker.errors import DockerException

    with _engine() as d:
        for _ in range(4):  # children before their base image (pyrt): a few passes
            left = [i for i in d.list_images(MANAGED_IMAGES) if i["id"] not in before]
            if not left:
                break
            for image in left:
                try:
                    d.remove_image(image["id"])
                except DockerException:
                    pass  # still used by a child image or a container: next pass
