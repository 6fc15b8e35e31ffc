"""Load ``images/catalog/*.yaml`` into a :class:`~appliance.catalog.schema.Catalog`.

Why this shape:

- Fast path first: files are parsed with libyaml's ``CSafeLoader`` when present and the
  merged catalog is cached per (directory, file mtimes/sizes), so ``appliance plan`` pays
  for YAML once per process.
- Errors are for people: the first problem becomes one :class:`CatalogError` line naming
  the file, the line, the dotted path (``engines.vllm-cuda.images.0.runtime.min``) and,
  for an unknown key or a dangling reference, the closest valid name (difflib). Line
  numbers come from re-composing the failing file only when something is wrong.
- Cross references are checked after schema validation: an engine's precisions, a model
  variant's engines, an app's roles, profile engine overrides, demo markers.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from appliance.catalog.schema import Catalog, CatalogFile
from appliance.errors import CatalogError, UsageError

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CACHE: dict[tuple, Catalog] = {}


def default_catalog_dir() -> Path:
    from appliance.paths import images_dir

    return images_dir() / "catalog"


def closest(name: str, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(str(name), sorted(str(c) for c in choices), n=1, cutoff=0.5)
    return found[0] if found else None


def unknown_name_error(kind: str, name: str, choices: Iterable[str], where: str | None = None) -> UsageError:
    choices = list(choices)
    near = closest(name, choices)
    fix = f"did you mean '{near}'?" if near else f"known {kind}s: {', '.join(sorted(choices))}"
    return UsageError(f"unknown {kind} '{name}'", where=where, fix=fix)


# --------------------------------------------------------------------------- locating lines


def _node_at(root: Any, path: tuple) -> tuple[Any, bool]:
    """The YAML node at ``path`` (or the deepest existing parent; flag = exact)."""
    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if key.value == str(part):
                    nxt = value
                    break
            if nxt is None:
                return node, False
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node, False
    return node, True


def _key_node(root: Any, path: tuple) -> Any:
    """For a path ending in a mapping key, the key node itself (its line is the key's line)."""
    if not path:
        return root
    parent, exact = _node_at(root, path[:-1])
    if exact and isinstance(parent, yaml.MappingNode):
        for key, _ in parent.value:
            if key.value == str(path[-1]):
                return key
    node, _ = _node_at(root, path)
    return node


def _line_of(text: str, path: tuple) -> int | None:
    try:
        root = yaml.compose(text, Loader=_SafeLoader)
    except yaml.YAMLError:
        return None
    if root is None:
        return None
    return _key_node(root, path).start_mark.line + 1


def _dotted(path: Iterable) -> str:
    return ".".join(str(p) for p in path)


def _fail(file: Path, text: str, path: tuple, message: str, fix: str) -> CatalogError:
    line = _line_of(text, path)
    where = f"{file}:{line}" if line else str(file)
    if path:
        where += f": {_dotted(path)}"
    return CatalogError(message, where=where, fix=fix)


# --------------------------------------------------------------------------- schema errors


def _allowed_keys(model_cls: Any, path: tuple) -> list[str]:
    """Field names valid at ``path`` (walks the pydantic schema; dict keys are free)."""
    from typing import get_args, get_origin

    from pydantic import BaseModel

    ann: Any = model_cls
    for part in path:
        ann = _unwrap(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = ann.model_fields.get(str(part))
            if field is None:
                return []
            ann = field.annotation
        elif get_origin(ann) is dict:
            ann = get_args(ann)[1]
        elif get_origin(ann) is list:
            ann = get_args(ann)[0]
        else:
            return []
    ann = _unwrap(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return list(ann.model_fields)
    return []


def _unwrap(ann: Any) -> Any:
    import types
    from typing import Union, get_args, get_origin

    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        return args[0] if len(args) == 1 else ann
    return ann


def _schema_error(file: Path, text: str, exc: Any) -> CatalogError:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(CatalogFile, loc[:-1])
        near = closest(loc[-1], allowed)
        fix = f"did you mean '{near}'?" if near else f"allowed keys: {', '.join(allowed)}"
        return _fail(file, text, loc, f"unknown key '{loc[-1]}'", fix)
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        options = [o.strip().strip("'\"") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        near = closest(err.get("input"), options)
        fix = f"did you mean '{near}'?" if near else f"use one of {expected}"
        return _fail(file, text, loc, f"invalid value {err.get('input')!r}", fix)
    if kind == "missing":
        return _fail(file, text, loc, f"missing required key '{loc[-1]}'", f"add '{loc[-1]}:' here")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return _fail(file, text, loc, f"{msg} (got {err.get('input')!r})"[:300],
                 "see docs/catalog.md for the field's type")


# --------------------------------------------------------------------------- loading


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise CatalogError("catalog directory not found", where=str(directory),
                           fix="pass --path DIR or set APPLIANCE_RESOURCES to the directory holding images/")
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise CatalogError("no *.yaml files in the catalog directory", where=str(directory),
                           fix="restore images/catalog/*.yaml")
    return files


def overlay_dir() -> Path:
    """The node's local catalog additions (``<data_dir>/catalog/*.yaml``), e.g. fine-tuned models
    registered by ``appliance train``. Merged into the default catalog like a shipped file
    (same schema, same checks; an id clash is an error naming the overlay file)."""
    from appliance.paths import data_dir

    return data_dir() / "catalog"


def _overlay_files() -> list[Path]:
    directory = overlay_dir()
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_catalog(path: str | os.PathLike | None = None, *, use_cache: bool = True,
                 overlay: bool | None = None) -> Catalog:
    """Load, validate and cross-check the catalog in ``path`` (default: the shipped one).

    ``overlay`` merges the node's local additions (:func:`overlay_dir`, e.g. fine-tuned models);
    default: only for the shipped catalog. A release's catalog (an upgrade's) is loaded with
    ``overlay=True`` so the node's fine-tuned models survive it -- and are checked against the
    new catalog's base models (a missing one is an error naming the overlay file).
    """
    from pydantic import ValidationError

    directory = Path(path) if path is not None else default_catalog_dir()
    files = _files(directory)
    if overlay if overlay is not None else path is None:
        files += _overlay_files()
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    if use_cache and stamp in _CACHE:
        return _CACHE[stamp]

    digest = hashlib.sha256()
    parsed: list[tuple[Path, str, CatalogFile]] = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        digest.update(file.name.encode() + b"\0" + text.encode() + b"\0")
        try:
            data = yaml.load(text, Loader=_SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{file}:{mark.line + 1}" if mark else str(file)
            raise CatalogError(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where,
                               fix="fix the YAML syntax (indentation, quotes, colons)") from None
        if not isinstance(data, dict):
            raise CatalogError("a catalog file must be a mapping with schema_version", where=str(file),
                               fix="start the file with 'schema_version: 1'")
        try:
            parsed.append((file, text, CatalogFile.model_validate(data)))
        except ValidationError as exc:
            raise _schema_error(file, text, exc) from None

    catalog = _merge(parsed, digest.hexdigest()[:10])
    _cross_check(catalog, parsed)
    if use_cache:
        _CACHE[stamp] = catalog
    return catalog


_SECTIONS = ("profiles", "precisions", "compat", "engines", "models", "apps", "training", "contracts")


def _merge(parsed: list[tuple[Path, str, CatalogFile]], digest: str) -> Catalog:
    merged: dict[str, dict] = {s: {} for s in _SECTIONS}
    origin: dict[tuple[str, str], Path] = {}
    singles: dict[str, tuple[Path, Any]] = {}
    for file, text, cf in parsed:
        for section in _SECTIONS:
            for key, value in getattr(cf, section).items():
                if key in merged[section]:
                    raise _fail(file, text, (section, key),
                                f"duplicate {section} id '{key}' (also in {origin[(section, key)].name})",
                                "give it a unique id")
                merged[section][key] = value
                origin[(section, key)] = file
        for single in ("planner", "platform", "release"):
            value = getattr(cf, single)
            if value is not None:
                if single in singles:
                    raise _fail(file, text, (single,),
                                f"'{single}' is set in two files (also {singles[single][0].name})",
                                f"keep '{single}' in one file")
                singles[single] = (file, value)
    first = parsed[0][0]
    for single in ("planner", "platform", "release"):
        if single not in singles:
            raise CatalogError(f"no file sets '{single}'", where=str(first.parent), fix=f"add a '{single}:' section")
    release = singles["release"][1]
    return Catalog(release=release, version=f"{release}+{digest}", files=[p.name for p, _, _ in parsed],
                   planner=singles["planner"][1], platform=singles["platform"][1], **merged)


def _cross_check(cat: Catalog, parsed: list[tuple[Path, str, CatalogFile]]) -> None:
    """Every reference points at something that exists; raise at the first dangling one."""
    where: dict[tuple[str, str], tuple[Path, str]] = {}
    for file, text, cf in parsed:
        for section in _SECTIONS:
            for key in getattr(cf, section):
                where[(section, key)] = (file, text)
    planner_file = next((f, t) for f, t, cf in parsed if cf.planner is not None)

    def bad(section: str, key: str, sub: tuple, message: str, name: str, choices: Iterable[str]) -> CatalogError:
        file, text = where[(section, key)]
        near = closest(name, choices)
        fix = f"did you mean '{near}'?" if near else f"known: {', '.join(sorted(choices))}"
        return _fail(file, text, (section, key) + sub, message, fix)

    for pname, prec in cat.precisions.items():
        if prec.derived_from and prec.derived_from not in cat.precisions:
            raise bad("precisions", pname, ("derived_from",), f"unknown precision '{prec.derived_from}'",
                      prec.derived_from, cat.precisions)
    for eid, eng in cat.engines.items():
        for i, p in enumerate(eng.precisions):
            if p not in cat.precisions:
                raise bad("engines", eid, ("precisions", i), f"unknown precision '{p}'", p, cat.precisions)
        for p in list(eng.precision_requirements) + list(eng.start.precision_args):
            if p not in cat.precisions:
                raise bad("engines", eid, ("precision_requirements",), f"unknown precision '{p}'", p, cat.precisions)
        for i, m in enumerate(eng.models or []):
            if m not in cat.models:
                raise bad("engines", eid, ("models", i), f"unknown model '{m}'", m, cat.models)
        if eng.demo != (eng.build is not None):
            file, text = where[("engines", eid)]
            raise _fail(file, text, ("engines", eid, "build"),
                        "a demo engine is built locally: set both demo and build",
                        "set 'demo: true' and 'build: images/demo/<name>' together")
    for mid, model in cat.models.items():
        for i, v in enumerate(model.variants):
            if v.precision not in cat.precisions:
                raise bad("models", mid, ("variants", i, "precision"), f"unknown precision '{v.precision}'",
                          v.precision, cat.precisions)
            for j, e in enumerate(v.engines or []):
                if e not in cat.engines:
                    raise bad("models", mid, ("variants", i, "engines", j), f"unknown engine '{e}'", e, cat.engines)
    for aid, app in cat.apps.items():
        roles = {r.role for r in app.roles}
        if "chat" not in roles and "completion" not in roles:
            file, text = where[("apps", aid)]
            raise _fail(file, text, ("apps", aid, "roles"), "an app needs a chat or completion role",
                        "add '- role: chat'")
    for mid, model in cat.models.items():
        if model.fine_tune is not None and model.fine_tune.base_model not in cat.models:
            raise bad("models", mid, ("fine_tune", "base_model"), f"unknown base model '{model.fine_tune.base_model}'",
                      model.fine_tune.base_model, cat.models)
    for rid, rec in cat.training.items():
        for i, m in enumerate(rec.models or []):
            if m not in cat.models:
                raise bad("training", rid, ("models", i), f"unknown model '{m}'", m, cat.models)
    for pid, prof in cat.profiles.items():
        for e in prof.engine_priority:
            if e not in cat.engines:
                raise bad("profiles", pid, ("engine_priority", e), f"unknown engine '{e}'", e, cat.engines)
    for eid, eng in cat.engines.items():
        if not eng.demo and eng.service not in cat.contracts:
            raise bad("engines", eid, ("service",), f"no argument contract for service '{eng.service}'",
                      eng.service, cat.contracts)
    if "default" not in cat.profiles:
        file, text = planner_file
        raise _fail(file, text, ("profiles",), "no 'default' profile", "add profiles.default")
