"""Build a bundle from a spec: export images, hash files, sign the manifest, write the tar.

The manifest must be the tar's first entry (so apply can verify the signature before reading
any blob), and it needs every digest -- so images are first exported into a spool directory
beside the output (one file per distinct blob: shared layers are stored once), files are
hashed where they lie, and only then is the tar written, blob by blob from file objects in
1 MiB chunks, re-hashing as it goes so the bundle always matches its manifest. Memory stays
flat whatever the bundle size. With ``base``, blobs the base bundle lists are left out and
marked ``in_bundle: false`` (a delta bundle; the node supplies them from its content store).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from appliance.atomic import place_file
from appliance.bundle import keys as keymod
from appliance.bundle.dockersave import Spool, split_save_stream
from appliance.bundle.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    BaseRef,
    Blob,
    FileItem,
    Image,
    Manifest,
    blob_member,
)
from appliance.bundle.reader import open_bundle
from appliance.bundle.spec import load_spec, spec_files
from appliance.errors import BundleError
from appliance.progress import NullProgress, Progress

CHUNK_BYTES = 1024 * 1024


class CreateReport(BaseModel):
    file: str
    version: str
    upgrades_from: list[str]
    delta: bool
    base_version: str | None
    key_id: str
    images: list[str]
    files: int
    blobs: int
    blobs_in_bundle: int
    file_size_bytes: int
    full_size_estimate_bytes: int
    seconds: float


def _hash_file(path: Path, advance=None) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK_BYTES)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
            if advance:
                advance(len(chunk))
    return "sha256:" + h.hexdigest(), size


def _header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = mtime
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _member_bytes(size: int) -> int:
    return tarfile.BLOCKSIZE + size + (-size % tarfile.BLOCKSIZE)


def _write_bytes_member(out, name: str, data: bytes, mtime: int) -> None:
    out.write(_header(name, len(data), mtime))
    out.write(data)
    out.write(b"\0" * (-len(data) % tarfile.BLOCKSIZE))


def _write_file_member(out, name: str, source: Path, digest: str, size: int, mtime: int, advance) -> None:
    """Copy ``source`` into the tar in chunks, checking it still has the digest it was listed with."""
    out.write(_header(name, size, mtime))
    h = hashlib.sha256()
    written = 0
    with open(source, "rb") as fh:
        while written < size:
            chunk = fh.read(min(CHUNK_BYTES, size - written))
            if not chunk:
                break
            h.update(chunk)
            out.write(chunk)
            written += len(chunk)
            advance(len(chunk))
    if written != size or "sha256:" + h.hexdigest() != digest:
        raise BundleError("changed while the bundle was being written", where=str(source),
                          fix="do not modify bundle inputs during `appliance bundle create`; re-run it")
    out.write(b"\0" * (-size % tarfile.BLOCKSIZE))


def create_bundle(spec_path: Path, out_path: Path, key_path: Path, *, base: Path | None = None,
                  progress: Progress | None = None, created: str | None = None) -> CreateReport:
    """Write a signed bundle for ``spec_path`` to ``out_path`` (atomically: a partial file never remains)."""
    start = time.monotonic()
    progress = progress or NullProgress()
    spec = load_spec(spec_path)
    where = str(spec_path)
    private_key = keymod.load_private_key(key_path)
    files = spec_files(spec, spec_path.parent, where)
    base_digests: set[str] = set()
    base_ref = None
    if base is not None:
        opened = open_bundle(base, verify_signature=False)
        base_digests = {b.digest for b in opened.manifest.blobs}
        base_ref = BaseRef(version=opened.manifest.version, manifest_sha256=opened.manifest_sha256)
    out_path = out_path.resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    spool_dir = Path(tempfile.mkdtemp(prefix=".bundle-spool-", dir=out_path.parent))
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        spool = Spool(spool_dir)
        images = _export_images(spec.images, spool, progress)
        sources: dict[str, Path] = {}
        sizes: dict[str, int] = {}
        order: list[str] = []

        def add(digest: str, path: Path) -> None:
            if digest not in sources:
                sources[digest] = path
                sizes[digest] = os.path.getsize(path)
                order.append(digest)

        for image in images:
            for digest in [image.id, *image.layers]:
                add(digest, spool.path(digest))
        file_items = []
        hashing = progress.task("hash files", sum(p.stat().st_size for *_, p in files))
        for kind, rel, chip, source in files:
            digest, size = _hash_file(source, hashing.advance)
            mode = 0o755 if os.stat(source).st_mode & 0o111 else 0o644
            file_items.append(FileItem(kind=kind, path=rel, digest=digest, size=size, mode=mode, chip=chip))
            add(digest, source)
        hashing.done()
        created = created or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            manifest = Manifest(
                format_version=FORMAT_VERSION, product=spec.product, version=spec.version,
                upgrades_from=spec.upgrades_from, created=created, base=base_ref, images=images,
                files=file_items,
                blobs=[Blob(digest=d, size=sizes[d], in_bundle=d not in base_digests) for d in order])
        except ValueError as exc:
            raise BundleError(f"cannot build the manifest: {exc}", where=where, fix="check the spec") from None
        manifest_bytes = manifest.to_bytes()
        sig_bytes = keymod.sign(manifest_bytes, private_key)
        mtime = int(time.time())
        bundled = [b for b in manifest.blobs if b.in_bundle]
        writing = progress.task("write bundle", sum(b.size for b in bundled))
        with open(partial, "wb") as out:
            _write_bytes_member(out, MANIFEST_NAME, manifest_bytes, mtime)
            _write_bytes_member(out, SIGNATURE_NAME, sig_bytes, mtime)
            for blob in bundled:
                _write_file_member(out, blob_member(blob.digest), sources[blob.digest], blob.digest, blob.size,
                                   mtime, writing.advance)
            out.write(b"\0" * (2 * tarfile.BLOCKSIZE))
            out.write(b"\0" * (-out.tell() % tarfile.RECORDSIZE))
        writing.done()
        place_file(partial, out_path)  # fsyncs the bundle's bytes and the rename
    finally:
        shutil.rmtree(spool_dir, ignore_errors=True)
        partial.unlink(missing_ok=True)
    file_size = out_path.stat().st_size
    omitted = sum(_member_bytes(b.size) for b in manifest.blobs if not b.in_bundle)
    return CreateReport(
        file=str(out_path), version=manifest.version, upgrades_from=manifest.upgrades_from,
        delta=manifest.is_delta, base_version=base_ref.version if base_ref else None,
        key_id=keymod.key_id_of(private_key.public_key()), images=[i.ref for i in images],
        files=len(file_items), blobs=len(manifest.blobs), blobs_in_bundle=len(bundled),
        file_size_bytes=file_size, full_size_estimate_bytes=file_size + omitted,
        seconds=round(time.monotonic() - start, 3))


def _export_images(refs: list[str], spool: Spool, progress: Progress) -> list[Image]:
    if not refs:
        return []
    from appliance.runtime import docker_adapter as da

    images = []
    with da.Docker(timeout_s=600) as docker:
        for ref in refs:
            image_id = docker.image_id(ref)
            if image_id is None:
                raise BundleError(f"image {ref} is not in the local Docker engine", where=f"image {ref}",
                                  fix=f"build or load it first (docker image inspect {ref})")
            task = progress.task(f"export {ref}", da.image_size_bytes(docker, ref))
            image = split_save_stream(da.save_image_stream(docker, ref), ref, spool, task.advance)
            task.done()
            if image.id != image_id:
                raise BundleError(f"exported config {image.id} differs from the engine's image id {image_id}",
                                  where=f"image {ref}", fix="re-run; the image may have been rebuilt meanwhile")
            images.append(image)
    return images
