"""`appliance bundle inspect`: what a bundle holds, without hashing it and without trusting it.

Inspect works before the signer's key is installed (an admin wants to see what arrived), so
it reports the signature's status instead of refusing: trusted, untrusted, or invalid. The
tar structure is still checked (a malformed bundle is refused: there is nothing to show).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from appliance.bundle import keys as keymod
from appliance.bundle.manifest import parse_manifest
from appliance.bundle.reader import check_entries, scan
from appliance.errors import BundleError


class ImageSummary(BaseModel):
    ref: str
    id: str
    layers: int
    size_bytes: int
    bundled_bytes: int


class FileGroup(BaseModel):
    kind: str
    chip: str | None
    files: int
    size_bytes: int


class InspectReport(BaseModel):
    file: str
    file_size_bytes: int
    format_version: int
    product: str
    version: str
    upgrades_from: list[str]
    created: str
    delta: bool
    base_version: str | None
    signer_key_id: str | None
    signature: str  # trusted | untrusted | invalid | no-trusted-keys
    signature_detail: str
    images: list[ImageSummary]
    files: list[FileGroup]
    blobs: int
    blobs_in_bundle: int
    bundled_bytes: int
    unpacked_bytes: int
    shared_layer_bytes_saved: int


def inspect_bundle(path: Path, *, pubkey: Path | None = None) -> InspectReport:
    index = scan(path)
    signer = None
    try:
        keys, keys_from = keymod.trusted_keys(pubkey)
        signer = keymod.verify_signature(index.manifest_bytes, index.sig_bytes, keys, keys_from, str(path))
        status, detail = "trusted", f"signed by {signer.key_id} ({signer.path})"
    except BundleError as exc:
        msg = exc.message
        status = ("no-trusted-keys" if msg.startswith("no trusted") else
                  "untrusted" if "not trusted" in msg else "invalid")
        detail = msg
    manifest = parse_manifest(index.manifest_bytes, str(path))
    check_entries(index, manifest)
    sig_key_id = None
    try:
        import json

        sig_key_id = json.loads(index.sig_bytes).get("key_id")
    except (ValueError, AttributeError):
        pass
    blobs = manifest.blob_map()
    images = []
    uses: dict[str, int] = defaultdict(int)
    for image in manifest.images:
        digests = [image.id, *image.layers]
        for d in digests:
            uses[d] += 1
        images.append(ImageSummary(
            ref=image.ref, id=image.id, layers=len(image.layers),
            size_bytes=sum(blobs[d].size for d in digests),
            bundled_bytes=sum(blobs[d].size for d in digests if blobs[d].in_bundle)))
    saved = sum(blobs[d].size * (n - 1) for d, n in uses.items() if n > 1)
    groups: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0, 0])
    for item in manifest.files:
        g = groups[(item.kind, item.chip)]
        g[0] += 1
        g[1] += item.size
    return InspectReport(
        file=str(path), file_size_bytes=index.file_size, format_version=manifest.format_version,
        product=manifest.product, version=manifest.version, upgrades_from=manifest.upgrades_from,
        created=manifest.created, delta=manifest.is_delta,
        base_version=manifest.base.version if manifest.base else None,
        signer_key_id=sig_key_id, signature=status, signature_detail=detail, images=images,
        files=[FileGroup(kind=k, chip=c, files=v[0], size_bytes=v[1]) for (k, c), v in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))],
        blobs=len(manifest.blobs), blobs_in_bundle=len(index.blob_members),
        bundled_bytes=manifest.bundled_size_bytes(), unpacked_bytes=manifest.unpacked_size_bytes(),
        shared_layer_bytes_saved=saved)
