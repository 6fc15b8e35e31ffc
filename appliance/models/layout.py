"""Where the model store keeps things, and a light look at one model -- standard library only.

Why a separate module: ``appliance status`` must start fast (no pydantic), yet it reports each
planned model's weights. The store's layout is defined here once; :mod:`appliance.models.store`
writes it, :func:`weights_state` only reads it.
"""

from __future__ import annotations

import json
from pathlib import Path


def store_root() -> Path:
    from appliance.paths import data_dir

    return data_dir() / "modelstore"


def manifest_path(model: str, precision: str, root: Path | None = None) -> Path:
    return (root or store_root()) / "manifests" / f"{model}@{precision}.json"


def weights_state(model: str, precision: str, model_path: str | None) -> tuple[str, str | None]:
    """(``in_store`` | ``present`` | ``missing`` | ``not_needed``, when last verified) -- one file read.

    ``present``: files at the plan's path that the store did not place (not verified by it).
    """
    if not model_path:
        return "not_needed", None
    path = manifest_path(model, precision)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return "in_store", (data.get("verified") or {}).get("at")
    except (OSError, ValueError):
        pass
    p = Path(model_path)
    try:
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            return "present", None
    except OSError:
        pass
    return "missing", None
