"""The bundle SPEC: a small YAML file saying what goes into a release's bundle.

Paths are relative to the spec file's directory. Images are referenced by name and must be
present in the local Docker engine (they are exported with ``docker save`` through the
adapter). Everything else is a directory (or file) copied into the release directory on the
node: ``playbooks/``, ``catalog/``, ``packages/<chip>/``, ``models/<name>/``.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from appliance.bundle.manifest import Version
from appliance.errors import BundleError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class BundleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product: str = "appliance"
    version: Version = Field(description="the release this bundle installs, e.g. 2.0.0")
    upgrades_from: list[Version] = Field(default_factory=list,
                                     description="installed versions this bundle may upgrade")
    images: list[str] = Field(default_factory=list, description="image references in the local engine")
    playbooks: str | None = None
    catalog: str | None = None
    packages: dict[str, str] = Field(default_factory=dict, description="chip family -> directory")
    models: dict[str, str] = Field(default_factory=dict, description="model name -> directory or file")
    wheels: str | None = Field(default=None, description="directory of Python wheels the catalog's image recipes "
                               "install (appliance.runtime.images: recipe builds)")

    @field_validator("packages", "models")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _NAME_RE.match(name):
                raise ValueError(f"name {name!r} may only hold letters, digits, '.', '_' and '-'")
        return v


def load_spec(path: Path) -> BundleSpec:
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BundleError("bundle spec not found", where=where, fix="check the path") from None
    except yaml.YAMLError as exc:
        raise BundleError(f"not valid YAML: {str(exc).splitlines()[0]}", where=where,
                          fix="see docs/bundle.md for the spec format") from None
    if not isinstance(raw, dict):
        raise BundleError("the spec must be a YAML mapping", where=where, fix="see docs/bundle.md")
    try:
        return BundleSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "spec"
        raise BundleError(f"{loc}: {err.get('msg')}", where=where, fix="see docs/bundle.md for the spec format") \
            from None


def spec_files(spec: BundleSpec, spec_dir: Path, where: str) -> list[tuple[str, str, str | None, Path]]:
    """(kind, release path, chip, source) for every file the spec names, in a stable order."""
    roots: list[tuple[str, str, str | None, str]] = []
    if spec.playbooks:
        roots.append(("playbooks", "playbooks", None, spec.playbooks))
    if spec.catalog:
        roots.append(("catalog", "catalog", None, spec.catalog))
    for chip, src in sorted(spec.packages.items()):
        roots.append(("package", f"packages/{chip}", chip, src))
    for name, src in sorted(spec.models.items()):
        roots.append(("model", f"models/{name}", None, src))
    if spec.wheels:
        roots.append(("wheels", "wheels", None, spec.wheels))
    out = []
    for kind, prefix, chip, src in roots:
        source = (spec_dir / src)
        if not source.exists():
            raise BundleError(f"{kind} path {src!r} does not exist", where=where,
                              fix="paths in the spec are relative to the spec file")
        if source.is_file():
            out.append((kind, f"{prefix}/{source.name}", chip, source))
            continue
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                path = Path(root) / name
                st = os.lstat(path)
                rel = path.relative_to(source).as_posix()
                if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
                    raise BundleError(f"{path} is not a regular file (links and devices are not carried)",
                                      where=where, fix="replace it with a regular file or remove it")
                out.append((kind, f"{prefix}/{rel}", chip, path))
    return out
