"""The bundle manifest: what a bundle holds, every blob by sha256 and size.

The manifest is the only thing that is signed; everything else in the bundle is trusted
because its digest is in the manifest. Its exact bytes (as stored in the tar) are what
the signature covers, so they are never re-serialized before verification.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from appliance.errors import BundleError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
BLOB_PREFIX = "blobs/sha256/"
MAX_MANIFEST_BYTES = 32 * 1024 * 1024  # metadata only; a manifest this big is an attack
MAX_SIGNATURE_BYTES = 4096
# Entries a manifest may list (files + blobs + images): far above a real release (a few thousand
# layers and files), far below what would make parsing or scanning a tool to exhaust the node.
MAX_MANIFEST_ENTRIES = 100_000

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^(\d+(?:\.\d+){0,3})(?:-([0-9A-Za-z.]+))?$")

FileKind = Literal["playbooks", "catalog", "package", "model", "wheels"]


def version_key(version: str) -> tuple:
    """Sort key for product versions ``N[.N[.N[.N]]][-pre]``; a pre-release sorts before its release."""
    m = _VERSION_RE.match(version)
    if not m:
        raise ValueError(f"invalid version {version!r} (expected e.g. 1.2.0 or 1.2.0-rc1)")
    nums = tuple(int(p) for p in m.group(1).split("."))
    nums = nums + (0,) * (4 - len(nums))
    pre = m.group(2)
    if pre is None:
        return nums + (1, ())
    return nums + (0, tuple(_pre_part(p) for p in pre.split(".")))


def _pre_part(part: str) -> tuple:
    """'rc10' -> (1, 'rc', 10) so rc2 < rc10; a plain number sorts before any word."""
    m = re.match(r"^([A-Za-z]*)(\d*)$", part)
    if m is None:
        return (2, part, 0)
    word, num = m.groups()
    return (1 if word else 0, word, int(num) if num else -1)


def _checked_version(version: str) -> str:
    version_key(version)  # raises ValueError with the expected form
    return version


# A product version field (manifest and bundle spec): checked where it is read.
Version = Annotated[str, AfterValidator(_checked_version)]


def compare_versions(a: str, b: str) -> int:
    ka, kb = version_key(a), version_key(b)
    return (ka > kb) - (ka < kb)


def digest_hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def blob_member(digest: str) -> str:
    return BLOB_PREFIX + digest_hex(digest)


def _check_digest(value: str) -> str:
    if not _DIGEST_RE.match(value):
        raise ValueError(f"invalid digest {value!r} (expected sha256:<64 lowercase hex>)")
    return value


def check_relative_path(path: str) -> str:
    """A path inside the release directory: relative, no '..', no empty parts."""
    if not path or path.startswith("/") or "\\" in path:
        raise ValueError(f"path {path!r} must be relative and use '/'")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"path {path!r} must not contain '.', '..' or empty parts")
    return path


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Blob(_Model):
    """One content-addressed blob. ``in_bundle`` is False in a delta bundle for blobs its base had."""

    digest: str
    size: int = Field(ge=0)
    in_bundle: bool = True

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        return _check_digest(v)


class Image(_Model):
    """A container image as Docker loads it: ``id`` is the config digest, layers are diff ids."""

    ref: str
    id: str
    layers: list[str]

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _check_digest(v)

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[str]) -> list[str]:
        return [_check_digest(d) for d in v]


class FileItem(_Model):
    """A file placed in the release directory (playbooks/, catalog/, packages/<chip>/, models/)."""

    kind: FileKind
    path: str
    digest: str
    size: int = Field(ge=0)
    mode: int = 0o644
    chip: str | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_relative_path(v)

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        return _check_digest(v)

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: int) -> int:
        if v & ~0o777:
            raise ValueError(f"mode {oct(v)} may only hold permission bits")
        return v


class BaseRef(_Model):
    """The bundle a delta was made against."""

    version: str
    manifest_sha256: str


class Manifest(_Model):
    format_version: int
    product: str = "appliance"
    version: Version
    upgrades_from: list[Version] = Field(default_factory=list)
    created: str
    base: BaseRef | None = None
    images: list[Image] = Field(default_factory=list)
    files: list[FileItem] = Field(default_factory=list)
    blobs: list[Blob] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is not supported (this appliance reads "
                             f"{FORMAT_VERSION})")
        digests = [b.digest for b in self.blobs]
        if len(set(digests)) != len(digests):
            raise ValueError("blobs lists a digest twice")
        known = set(digests)
        used: set[str] = set()
        for image in self.images:
            for d in [image.id, *image.layers]:
                if d not in known:
                    raise ValueError(f"image {image.ref} refers to {d}, which is not in blobs")
                used.add(d)
        paths = set()
        for item in self.files:
            if item.digest not in known:
                raise ValueError(f"file {item.path} refers to {item.digest}, which is not in blobs")
            if item.path in paths:
                raise ValueError(f"file {item.path} is listed twice")
            paths.add(item.path)
            used.add(item.digest)
        unused = known - used
        if unused:
            raise ValueError(f"blob {sorted(unused)[0]} is listed but used by no image or file")
        if self.base is None and any(not b.in_bundle for b in self.blobs):
            raise ValueError("blobs marked in_bundle=false need a base (only delta bundles omit blobs)")
        return self

    # ---- derived ----------------------------------------------------------------------------
    @property
    def is_delta(self) -> bool:
        return self.base is not None

    def blob_map(self) -> dict[str, Blob]:
        return {b.digest: b for b in self.blobs}

    def unpacked_size_bytes(self) -> int:
        """Bytes the node ends up holding for this release (all blobs, in the bundle or not)."""
        return sum(b.size for b in self.blobs)

    def bundled_size_bytes(self) -> int:
        return sum(b.size for b in self.blobs if b.in_bundle)

    def to_bytes(self) -> bytes:
        """Serialization used when creating (deterministic: sorted keys)."""
        return (json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True) + "\n").encode()


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Parse manifest bytes (call only after the signature has been verified)."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"manifest.json is not valid JSON: {exc}", where=where,
                          fix="rebuild the bundle with `appliance bundle create`") from None
    except RecursionError:
        raise BundleError("manifest.json nests too deeply", where=where,
                          fix="rebuild the bundle with `appliance bundle create`") from None
    if isinstance(raw, dict):
        count = sum(len(raw.get(k) or []) for k in ("files", "blobs", "images") if isinstance(raw.get(k), list))
        if count > MAX_MANIFEST_ENTRIES:
            raise BundleError(f"manifest.json lists {count} entries (limit {MAX_MANIFEST_ENTRIES})", where=where,
                              fix="split the release into smaller bundles")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "manifest"
        raise BundleError(f"manifest.json: {loc}: {err.get('msg')}", where=where,
                          fix="rebuild the bundle with a current `appliance bundle create`") from None
