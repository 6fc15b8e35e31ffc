"""Fixtures for the console tests: the gateway tests' helpers (gwtest) and a console server thread."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))  # gwtest, as the gateway tests use it
sys.path.insert(0, str(Path(__file__).resolve().parent))  # consoletest
