"""Shared test fixtures. Each area keeps its own tests (and conftest) in tests/<area>/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # --import-mode=importlib: `from tests.stack_support import ...` (shared helpers)
    sys.path.insert(0, str(REPO))
from tests.support import H200  # noqa: E402 - after the sys.path line above


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    """Every test gets its own APPLIANCE_DATA_DIR so no test touches /var/lib/appliance."""
    if "APPLIANCE_DATA_DIR" not in os.environ or os.environ.get("APPLIANCE_TEST_KEEP_DATA_DIR") != "1":
        monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path_factory.mktemp("appliance-data")))


@pytest.fixture
def h200_snapshot() -> Path:
    return H200


MANAGED_IMAGES = ["appliance.managed=true"]


def _managed_image_ids() -> set[str] | None:
    """Ids of images appliance built (label appliance.managed=true), or None without Docker."""
    try:
        from appliance.runtime.docker_adapter import Docker

        with Docker() as d:
            return {i["id"] for i in d.list_images(MANAGED_IMAGES)}
    except Exception:  # noqa: BLE001 - no engine here: nothing to clean
        return None


@pytest.fixture(scope="session", autouse=True)
def _remove_images_built_by_the_tests():
    """Leave the engine as the suite found it: images the tests built (init, bundles, training)
    are removed at the end; images that existed before the run are kept."""
    before = _managed_image_ids()
    yield
    if before is None:
        return
    from docker.errors import DockerException

    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        for _ in range(4):  # children before their base image (pyrt): a few passes
            left = [i for i in d.list_images(MANAGED_IMAGES) if i["id"] not in before]
            if not left:
                break
            for image in left:
                try:
                    d.remove_image(image["id"])
                except DockerException:
                    pass  # still used by a child image or a container: next pass
