"""Fixtures for detection tests; the helpers live in detect_support.py (importable by name)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detect_support import H200, copy_snapshot  # noqa: E402


@pytest.fixture
def h200_copy(tmp_path) -> Path:
    return copy_snapshot(H200, tmp_path / "h200")
