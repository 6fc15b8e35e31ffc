"""The model store's operations, as the CLI (``appliance models ...``) and the deploy pipeline call them.

Each takes the catalog it matches against (the installed release's, with the node's overlay) and
returns a typed result; which services use a model is the caller's to say (the runtime's active
release), so this package stays below the runtime.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from appliance.errors import UsageError
from appliance.models import match
from appliance.models.manifest import ImportResult, Manifest, ModelList, VerifyReport
from appliance.models.sources import open_source
from appliance.models.store import ModelStore, models_root, verify_all
from appliance.progress import Progress


def import_model(source: str, catalog, *, model: str | None = None, precision: str | None = None,
                 allow_pickle: bool = False, progress: Progress | None = None,
                 store: ModelStore | None = None) -> ImportResult:
    """Recognise ``source``, match it to a catalog model (refusing a mismatch naming the field),
    copy it into the store while hashing, and place it at the plan's path."""
    src = open_source(source, allow_pickle=allow_pickle)
    temps = [src.temp_dir]
    try:
        facts, detected, origin = match.inspect(src)
        target = _conversion_target(src, facts, detected, catalog, model, precision)
        if target is not None:  # the catalog serves it as GGUF: convert, then import the GGUF
            src, facts, detected, origin = _converted(src, target, catalog)
            temps.append(src.temp_dir)
        model_id, prec = match.choose(src, facts, detected, origin, catalog, model=model or (target and target[0]),
                                      precision=precision)
        variant = catalog.models[model_id].variant(prec)
        expected = {variant.file: variant.sha256} if variant is not None and variant.file and variant.sha256 else {}
        store = store or ModelStore()
        return store.import_source(src, model=model_id, precision=prec, facts=facts,
                                   views_root=models_root(catalog), progress=progress, expected=expected)
    finally:
        for t in temps:
            if t is not None:
                shutil.rmtree(t, ignore_errors=True)


def _conversion_target(src, facts, detected, catalog, model: str | None, precision: str | None):
    """(model id, GGUF variant) when these Hugging Face files are a model the catalog serves only as
    a GGUF that appliance can convert to (a BERT sentence encoder); else None."""
    from appliance.models.convert import CONVERTIBLE

    if src.layout != "hf" or facts.architecture not in CONVERTIBLE:
        return None
    candidates = [model] if model else [mid for mid, m in sorted(catalog.models.items())
                                        if not match.differences(facts, mid, m)]
    for mid in candidates:
        entry = catalog.models.get(mid)
        if entry is None:
            continue
        hf = [v for v in entry.variants if not v.precision.startswith("gguf-")]
        gguf = [v for v in entry.variants if v.precision.startswith("gguf-") and v.file
                and (precision is None or v.precision == precision)]
        if gguf and not any(v.precision == detected for v in hf):
            return mid, gguf[0]
    return None


def _converted(src, target, catalog):
    import tempfile

    from appliance.models.convert import bert_to_gguf
    from appliance.models.sources import Source, SourceFile

    model_id, variant = target
    directory = Path(tempfile.mkdtemp(prefix="appliance-model-gguf-"))
    root = src.files[0].path.parent if src.file("config.json") is None else src.file("config.json").path.parent
    out = bert_to_gguf(root, directory / variant.file, name=catalog.models[model_id].name)
    st = out.stat()
    conv = Source(kind=src.kind, ref=f"{src.ref} (converted to GGUF by appliance)", layout="gguf",
                  files=[SourceFile(rel=out.name, path=out, size=st.st_size, mtime_ns=st.st_mtime_ns)],
                  name_hint=src.name_hint, warnings=list(src.warnings), temp_dir=directory)
    facts, detected, origin = match.inspect(conv)
    return conv, facts, detected, origin


def import_directory(directory: Path, catalog, *, name: str, known: dict[str, str],
                     progress: Progress | None = None, store: ModelStore | None = None) -> ImportResult:
    """A bundle's ``models/<name>/`` (``<model>`` or ``<model>@<precision>``) into the store; its files'
    digests are known (the bundle verified them), so they are linked in, not copied."""
    model, _, precision = name.partition("@")
    src = open_source(str(directory))
    src.kind, src.ref = "bundle", f"bundle models/{name}"
    facts, detected, origin = match.inspect(src)
    model_id, prec = match.choose(src, facts, detected, origin, catalog, model=model, precision=precision or None)
    return (store or ModelStore()).import_source(src, model=model_id, precision=prec, facts=facts,
                                                 views_root=models_root(catalog), progress=progress, known=known)


def list_models(catalog, *, used_by: dict[str, list[str]] | None = None,
                store: ModelStore | None = None) -> ModelList:
    return (store or ModelStore()).listing(models_root(catalog), used_by)


def resolve(ref: str, store: ModelStore) -> list[Manifest]:
    found = store.find(ref)
    if not found:
        known = sorted(m.key for m in store.manifests())
        raise UsageError(f"no model {ref!r} in the store", where="models",
                         fix=f"one of: {', '.join(known)}" if known else "import one: appliance models import SOURCE")
    return found


def verify_models(ref: str | None = None, *, progress: Progress | None = None,
                  store: ModelStore | None = None) -> VerifyReport:
    store = store or ModelStore()
    manifests = resolve(ref, store) if ref else store.manifests()
    with store.locked():
        return verify_all(store, manifests, progress)


def remove_model(ref: str, catalog, *, used_by: dict[str, list[str]] | None = None,
                 store: ModelStore | None = None) -> dict:
    """Remove a model version (refused while a service of the active release mounts it)."""
    store = store or ModelStore()
    manifests = resolve(ref, store)
    if len(manifests) > 1:
        raise UsageError(f"{ref} has {len(manifests)} precisions in the store", where="models remove",
                         fix=f"name one: {', '.join(m.key for m in manifests)}")
    m = manifests[0]
    users = (used_by or {}).get(m.key, [])
    if users:
        raise UsageError(f"{m.key} is used by {', '.join(users)}", where="models remove",
                         fix="serve other models first (appliance config set models=... && appliance init --yes)")
    freed = store.remove(m, models_root(catalog))
    return {"removed": m.key, "freed_bytes": freed}


def export_model(ref: str, dest: str | Path, *, progress: Progress | None = None,
                 store: ModelStore | None = None) -> dict:
    store = store or ModelStore()
    manifests = resolve(ref, store)
    if len(manifests) > 1:
        raise UsageError(f"{ref} has {len(manifests)} precisions in the store", where="models export",
                         fix=f"name one: {', '.join(m.key for m in manifests)}")
    out = store.export(manifests[0], Path(dest), progress)
    return {"exported": manifests[0].key, "directory": str(out), "files": len(manifests[0].files),
            "bytes": manifests[0].size}
