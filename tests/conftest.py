"""Shared test fixtures. Each area keeps its own tests (and conftest) in tests/<area>/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # --import-mode=importlib: `from tests.stack_support import ...` (shared helpers)
    sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    """Every test gets its own APPLIANCE_DATA_DIR so no test touches /var/lib/appliance."""
    if "APPLIANCE_DATA_DIR" not in os.environ or os.environ.get("APPLIANCE_TEST_KEEP_DATA_DIR") != "1":
        monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path_factory.mktemp("appliance-data")))


@pytest.fixture
def shared_dir() -> Path:
    return SHARED


@pytest.fixture
def h200_snapshot() -> Path:
    return SHARED / "fixtures" / "nodes" / "h200-1gpu"
