"""Fixtures for the AMD / Hygon / Ascend / Gaudi / Kunlunxin tests; helpers live in v1support.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detect"))  # detect_support
sys.path.insert(0, str(Path(__file__).resolve().parent))
