"""The model-store tests' data directory: a fresh one per test, with the tiny models' catalog overlay."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models import modelkit as K


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "data"
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(d))
    K.catalog_overlay(d)
    return d
