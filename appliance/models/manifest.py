"""The model store's records: a manifest per model version, and what the commands return.

A manifest (``appliance-model/1``) names one catalog model at one precision and lists its files
with size and sha256; the bytes live once each in the store's blobs (``blobs/sha256/<hex>``),
shared by every manifest that has the same file. Manifests are written atomically, and only
after every blob is in place and verified, so a manifest on disk always means "all of it is
here".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

MANIFEST_FORMAT = "appliance-model/1"
Layout = Literal["hf", "gguf"]
SourceKind = Literal["hf-dir", "hf-cache", "modelscope", "gguf", "package", "bundle"]


class FileEntry(BaseModel):
    path: str = Field(description="path inside the model directory (e.g. model-00001-of-00004.safetensors)")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SourceInfo(BaseModel):
    kind: SourceKind
    ref: str = Field(description="what was imported: a directory, a file, a package name and version")


class Facts(BaseModel):
    """What the files say about the model (config.json / safetensors headers / GGUF metadata)."""

    architecture: str | None = None
    layers: int | None = None
    hidden_size: int | None = None
    attention_heads: int | None = None
    kv_heads: int | None = None
    vocab_size: int | None = None
    max_context: int | None = None
    params: int | None = None
    dtype: str | None = None


class Verification(BaseModel):
    at: str = Field(description="when every blob was last hashed against the manifest (UTC)")
    at_ts: float
    blobs: dict[str, list[int]] = Field(default_factory=dict,
                                        description="sha256 -> [size, mtime_ns] of the blob when it was hashed")


class Manifest(BaseModel):
    format: str = MANIFEST_FORMAT
    model: str = Field(description="catalog model id")
    precision: str
    layout: Layout
    files: list[FileEntry]
    source: SourceInfo
    facts: Facts = Field(default_factory=Facts)
    imported_at: str
    verified: Verification | None = None

    @property
    def key(self) -> str:
        return f"{self.model}@{self.precision}"

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


class ImportResult(BaseModel):
    model: str
    precision: str
    layout: Layout
    source: SourceInfo
    files: int
    bytes_total: int
    bytes_copied: int = Field(description="bytes read from the source and written to the store in this run")
    bytes_reused: int = Field(description="bytes already in the store (shared files, a resumed import)")
    resumed: bool = False
    seconds: float
    path: str = Field(description="where the model's files are placed (the path the plan mounts)")
    replaced: bool = Field(default=False, description="an earlier import of this model@precision was replaced")
    bytes_freed: int = Field(default=0, description="bytes of the replaced import's files no model uses any more")
    warnings: list[str] = Field(default_factory=list)


class ModelEntry(BaseModel):
    model: str
    precision: str
    layout: Layout
    size_bytes: int
    files: int
    source: str
    imported_at: str
    verified_at: str | None
    path: str
    used_by: list[str] = Field(default_factory=list, description="services of the active release that mount it")


class ModelList(BaseModel):
    store: str
    models: list[ModelEntry]
    blobs: int
    blob_bytes: int = Field(description="bytes on disk (each shared file once)")
    manifest_bytes: int = Field(description="sum of the manifests' sizes (shared files counted per model)")


class Damage(BaseModel):
    model: str
    precision: str
    file: str
    problem: str


class VerifyReport(BaseModel):
    ok: bool
    checked: list[str] = Field(description="model@precision checked")
    bytes_hashed: int
    seconds: float
    damaged: list[Damage] = Field(default_factory=list)
