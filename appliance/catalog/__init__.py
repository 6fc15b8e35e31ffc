"""The image/model catalog (``images/catalog/*.yaml``): engines, models, apps, training recipes.

Library entry points:

- ``load_catalog(path=None) -> Catalog``: load, validate and cross-check the catalog
  (default: the shipped one found through :func:`appliance.paths.images_dir`); cached per
  process. Raises :class:`appliance.errors.CatalogError` (exit 2) with file, line, dotted
  path and a suggestion.
- ``compat_for(backend, catalog=None) -> BackendCompat | None``: what the catalog's images
  need from a host of ``backend`` (``cuda``, ``cann``, ...): ``runtime_name``, ``driver_min``,
  ``runtime`` (inclusive ``min``/``max``), ``recommended_runtime`` (what provisioning
  installs) and, for CUDA, ``driver_runtime`` (newest runtime each driver supports). The
  provisioning preflight reads this.
- ``host_runtime(backend, runtime_version, driver_version, catalog=None)``: the runtime
  version to plan for (detected, else derived from the driver, else None).

Format and how to extend it: ``docs/catalog.md``.
"""

from __future__ import annotations

from appliance.catalog.loader import load_catalog
from appliance.catalog.schema import BackendCompat, Catalog

__all__ = ["load_catalog", "compat_for", "host_runtime", "Catalog", "BackendCompat"]


def compat_for(backend: str, catalog: Catalog | None = None) -> BackendCompat | None:
    """Driver minimum and runtime range for ``backend`` (None when the catalog has no entry)."""
    cat = catalog or load_catalog()
    return cat.compat_for(backend)


def host_runtime(backend: str, runtime_version: str | None, driver_version: str | None,
                 catalog: Catalog | None = None) -> tuple[str | None, str]:
    """(version, how it was found): detected runtime, else the newest the driver supports."""
    from appliance.catalog.versions import at_least

    if runtime_version:
        return runtime_version, "detected"
    compat = compat_for(backend, catalog)
    if driver_version and compat is not None:
        for row in compat.driver_runtime:
            if at_least(driver_version, row.driver_min):
                return row.runtime, f"from driver {driver_version}"
    return None, "unknown"
