"""Where appliance finds its shipped resources and keeps its data.

Resources (the catalog in ``images/``, ``playbooks/``) live beside the package in a
source checkout and under ``<prefix>/share/appliance`` in an installed wheel; both are
found without any network access. ``APPLIANCE_RESOURCES`` overrides the lookup.

Data (state database, ansible-runner data dirs, staged bundles) lives under
``APPLIANCE_DATA_DIR`` (default ``/var/lib/appliance`` as root, else
``~/.local/share/appliance``) so tests can point it at a temporary directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PKG_PARENT = Path(__file__).resolve().parent.parent


def resource_dir() -> Path:
    """The directory holding ``images/`` and ``playbooks/``."""
    env = os.environ.get("APPLIANCE_RESOURCES")
    if env:
        return Path(env)
    if (_PKG_PARENT / "images").is_dir() and (_PKG_PARENT / "playbooks").is_dir():
        return _PKG_PARENT
    return Path(sys.prefix) / "share" / "appliance"


def images_dir() -> Path:
    return resource_dir() / "images"


def playbooks_dir() -> Path:
    return resource_dir() / "playbooks"


# Under the model store's views root: weights an engine converted from the store's
# (<views>/.derived/<model>/<precision>/<engine>-tp<N>; appliance.deploy.convert).
DERIVED_DIR = ".derived"


def data_dir() -> Path:
    env = os.environ.get("APPLIANCE_DATA_DIR")
    if env:
        return Path(env)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/appliance")
    return Path.home() / ".local" / "share" / "appliance"


def state_path() -> Path:
    return data_dir() / "state.db"
