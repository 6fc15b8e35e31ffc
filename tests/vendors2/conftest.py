"""Fixtures for the second vendor group's tests; helpers live in v2support.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detect"))  # detect_support
sys.path.insert(0, str(Path(__file__).resolve().parent))
