"""The planner: (inventory, catalog, request) -> a deterministic Plan with explanations.

Library entry point (the runtime's ``init`` and ``appliance plan`` call it)::

    from appliance.planner import plan
    plan(inventory, catalog=None, models=None, profile="default", demo=False,
         *, licenses=None, now=None, models_dir=None) -> Plan

- ``inventory``: :class:`appliance.inventory.models.Inventory` (e.g. from
  ``appliance.inventory.detect.detect(snapshot=..., usage=False)``).
- ``catalog``: :class:`appliance.catalog.schema.Catalog` (default ``load_catalog()``).
- ``models``: model ids to serve; ``None`` = the default set for this hardware (the best
  chat model that fits plus the embedding model for the knowledge base); with
  ``demo=True`` and no models, ``demo-chat`` + ``demo-embed`` on the demo engine (CPU, no
  devices).
- ``profile``: ``default`` | ``throughput`` | ``latency`` (``images/catalog/catalog.yaml``).
- ``licenses``: license files or paths to check closed models against (default: the
  installed ones under ``<data_dir>/licenses``); ``now``: the time licenses are checked at.
- ``models_dir``: host directory of weights (default ``<data_dir>/models``).

Returns a :class:`~appliance.planner.models.Plan`: ``services`` (engine, image, precision,
devices, tensor parallel degree, per-device memory budget, entrypoint/command/env, port,
health check; ``name`` is ``llm-<id>``/``embed-<id>``/``rerank-<id>`` with dots as dashes),
``apps`` (sample apps whose roles are served, bound to services), ``gateway``,
``rejected`` (every alternative with ``code`` and ``reason``) and ``explain``. Raises
:class:`~appliance.errors.NoFitError` (exit 3, ``.plan`` holds the partial plan) when a
requested model fits nowhere, :class:`~appliance.errors.UsageError` (exit 2) for an unknown
model or profile. Same inputs -> byte-identical JSON. Memory model:
:mod:`appliance.planner.memory`; ranking rules: ``docs/planner.md``; training memory:
:mod:`appliance.planner.training`.
"""

from __future__ import annotations


def plan(inventory, catalog=None, models=None, profile="default", demo=False, **kwargs):
    """Plan the node's services (see the module docstring)."""
    from appliance.planner.core import plan as _plan

    return _plan(inventory, catalog, models=models, profile=profile, demo=demo, **kwargs)


__all__ = ["plan"]
