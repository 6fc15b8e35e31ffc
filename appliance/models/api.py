"""The model store's operations, as the CLI (``appliance models ...``) and the deploy pipeline call them.

Each takes the catalog it matches against (the installed release's, with the node's overlay) and
returns a typed result; which services use a model is the caller's to say (the runtime's active
release), so this package stays below the runtime.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from appliance.errors import UsageError
from appliance.models import match
from appliance.models.manifest import ImportResult, Manifest, ModelList, VerifyReport
from appliance.models.sources import Source, SourceFile, open_source
from appliance.models.store import ModelStore, models_root, verify_all
from appliance.progress import Progress


def import_model(source: str, catalog, *, model: str | None = None, precision: str | None = None,
                 allow_pickle: bool = False, progress: Progress | None = None,
                 store: ModelStore | None = None) -> ImportResult:
    """Recognise ``source``, match it to a catalog model (refusing a mismatch naming the field),
    copy it into the store while hashing, and place it at the plan's path. Every temporary
    directory (an unpacked zip, a converted GGUF) is removed however this ends."""
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
        src = catalog_names(src, variant)
        expected = {variant.file: variant.sha256} if variant is not None and variant.file and variant.sha256 else {}
        store = store or ModelStore()
        return store.import_source(src, model=model_id, precision=prec, facts=facts,
                                   views_root=models_root(catalog), progress=progress, expected=expected)
    finally:
        for t in temps:
            if t is not None:
                shutil.rmtree(t, ignore_errors=True)


def catalog_names(src: Source, variant) -> Source:
    """A single GGUF file takes the catalog variant's ``file`` name, whatever it was called where it
    came from: the plan's engine opens ``<model path>/<file>``, and the catalog's sha256 is keyed
    by that name (a renamed download would otherwise skip the check)."""
    if src.layout != "gguf" or variant is None or not variant.file or len(src.files) != 1:
        return src
    f = src.files[0]
    if f.rel == variant.file:
        return src
    return replace(src, files=[replace(f, rel=variant.file)])


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
    """The GGUF that ``src``'s BERT files convert to, in a new temporary directory (``temp_dir`` of
    the Source returned; removed here when the conversion fails, so it never leaks)."""
    import tempfile

    from appliance.models.convert import bert_to_gguf

    model_id, variant = target
    directory = Path(tempfile.mkdtemp(prefix="appliance-model-gguf-"))
    try:
        out = bert_to_gguf({f.rel: f.path for f in src.files}, directory / variant.file,
                           name=catalog.models[model_id].name, where=src.ref)
        st = out.stat()
        conv = Source(kind=src.kind, ref=f"{src.ref} (converted to GGUF by appliance)", layout="gguf",
                      files=[SourceFile(rel=variant.file, path=out, size=st.st_size, mtime_ns=st.st_mtime_ns)],
                      name_hint=src.name_hint, warnings=list(src.warnings), temp_dir=directory)
        facts, detected, origin = match.inspect(conv)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
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
    named = catalog_names(src, catalog.models[model_id].variant(prec))
    known = {new.rel: known[old.rel] for old, new in zip(src.files, named.files) if old.rel in known}
    return (store or ModelStore()).import_source(named, model=model_id, precision=prec, facts=facts,
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


def resolve_one(ref: str, store: ModelStore, command: str) -> Manifest:
    """The one manifest ``ref`` names; a model with several precisions stored needs ``model@precision``."""
    manifests = resolve(ref, store)
    if len(manifests) > 1:
        raise UsageError(f"{ref} has {len(manifests)} precisions in the store", where=f"models {command}",
                         fix=f"name one: {', '.join(m.key for m in manifests)}")
    return manifests[0]


def verify_models(ref: str | None = None, *, progress: Progress | None = None,
                  store: ModelStore | None = None) -> VerifyReport:
    store = store or ModelStore()
    manifests = resolve(ref, store) if ref else store.manifests()
    with store.locked():
        return verify_all(store, manifests, progress)


def removable(ref: str, *, used_by: dict[str, list[str]] | None = None, store: ModelStore | None = None) -> Manifest:
    """The manifest ``remove`` would remove, or the reason it may not: an unknown id, several
    precisions, a service of the active release mounting it. The CLI asks before removing only
    once this has passed, so a bad id never prompts."""
    m = resolve_one(ref, store or ModelStore(), "remove")
    users = (used_by or {}).get(m.key, [])
    if users:
        raise UsageError(f"{m.key} is used by {', '.join(users)}", where="models remove",
                         fix="serve other models first (appliance config set models=... && appliance init --yes)")
    return m


def remove_model(ref: str, catalog, *, used_by: dict[str, list[str]] | None = None,
                 store: ModelStore | None = None) -> dict:
    """Remove a model version (refused while a service of the active release mounts it)."""
    store = store or ModelStore()
    m = removable(ref, used_by=used_by, store=store)
    freed = store.remove(m, models_root(catalog))
    return {"removed": m.key, "freed_bytes": freed}


def export_model(ref: str, dest: str | Path, *, progress: Progress | None = None,
                 store: ModelStore | None = None) -> dict:
    store = store or ModelStore()
    m = resolve_one(ref, store, "export")
    out = store.export(m, Path(dest), progress)
    return {"exported": m.key, "directory": str(out), "files": len(m.files), "bytes": m.size}
