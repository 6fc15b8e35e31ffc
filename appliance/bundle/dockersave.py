"""Translate between ``docker save`` tar streams and content-addressed blobs.

Export: a ``docker save`` stream is read member by member (tar stream mode, no seeking);
every layer tar and config file is written to a spool directory under its sha256 while it
is hashed, so a layer shared by several images is kept once. The save's own
``manifest.json`` then says which file is which image's config and layers. Works for the
legacy layout (``<id>/layer.tar``, Docker < 25) and the OCI layout (``blobs/sha256/...``).

Import: :func:`load_stream` rebuilds a minimal ``docker save`` tar from blobs -- one entry per
blob plus a ``manifest.json`` naming configs, tags and layers -- as a generator of chunks,
so ``docker load`` receives a stream that is never whole in memory. Each blob is hashed
again as it is sent; a mismatch aborts the stream before the final ``manifest.json``, so
Docker tags nothing from a corrupted stream.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from appliance.atomic import place_file
from appliance.bundle.manifest import Image, blob_member
from appliance.errors import BundleError

CHUNK_BYTES = 1024 * 1024
_SMALL_JSON = {"manifest.json", "index.json", "repositories", "oci-layout"}


class ChunkReader(io.RawIOBase):
    """A read-only file object over an iterator of byte chunks (for tarfile stream mode)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


@dataclass
class Spool:
    """A directory of blobs named by digest: ``<root>/<hex>``."""

    root: Path

    def path(self, digest: str) -> Path:
        return self.root / digest.split(":", 1)[1]

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put_stream(self, stream, progress_advance=None) -> tuple[str, int]:
        """Copy a file object into the spool while hashing it; returns (digest, size)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=self.root)
        tmp = Path(tmp_name)
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = stream.read(CHUNK_BYTES)
                if not chunk:
                    break
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if progress_advance:
                    progress_advance(len(chunk))
        digest = "sha256:" + h.hexdigest()
        final = self.path(digest)
        if final.exists():
            tmp.unlink()
        else:
            place_file(tmp, final, fsync=False)  # a spool: temporary by design, durability buys nothing
        return digest, size


def split_save_stream(chunks: Iterable[bytes], ref: str, spool: Spool, progress_advance=None) -> Image:
    """Spool the configs and layers of one saved image; return it as a manifest Image."""
    path_digest: dict[str, str] = {}
    links: dict[str, str] = {}
    small: dict[str, bytes] = {}
    with tarfile.open(fileobj=ChunkReader(chunks), mode="r|") as tf:
        for member in tf:
            name = posixpath.normpath(member.name)
            if member.issym() or member.islnk():
                target = member.linkname
                if member.issym():
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                links[name] = target
                continue
            if not member.isreg():
                continue
            stream = tf.extractfile(member)
            if name in _SMALL_JSON:
                small[name] = stream.read()
                continue
            base = posixpath.basename(name)
            if base in ("VERSION", "json"):
                continue  # legacy per-layer metadata, not needed by docker load
            digest, _ = spool.put_stream(stream, progress_advance)
            path_digest[name] = digest
    if "manifest.json" not in small:
        raise BundleError("the docker save stream has no manifest.json", where=f"image {ref}",
                          fix="use a Docker engine that supports `docker save`")
    entries = json.loads(small["manifest.json"])
    entry = next((e for e in entries if ref in (e.get("RepoTags") or [])), entries[0] if entries else None)
    if entry is None:
        raise BundleError("the docker save stream lists no image", where=f"image {ref}",
                          fix="check that the image exists: docker image inspect " + ref)

    def resolve(path: str) -> str:
        path = posixpath.normpath(path)
        for _ in range(8):
            if path in links:
                path = links[path]
        if path not in path_digest:
            raise BundleError(f"docker save stream lacks {path}", where=f"image {ref}",
                              fix="re-run; the engine may have changed the image meanwhile")
        return path_digest[path]

    config = resolve(entry["Config"])
    layers = [resolve(p) for p in entry.get("Layers") or []]
    # Other spooled files (e.g. OCI index/manifest blobs) stay unreferenced in the temporary
    # spool: create() only bundles what the manifest references.
    return Image(ref=ref, id=config, layers=layers)


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def load_stream(images: list[Image], locate: Callable[[str], tuple[str, int, int]], *,
                progress_advance=None,
                after_first_blob: Callable[[], None] | None = None,
                on_mismatch: Callable[[str, str], None] | None = None) -> Iterator[bytes]:
    """Yield a ``docker load``-able tar of ``images`` built from blobs.

    ``locate(digest)`` gives (file, offset, size) -- a range of the bundle or a content-store
    file. Every blob is re-hashed on the way; a mismatch raises BundleError mid-stream, before the manifest.json
    entry, so the engine tags nothing (``on_mismatch`` lets the caller drop a bad stored copy).
    ``after_first_blob`` is a hook for the crash tests.
    """
    seen: set[str] = set()
    order: list[str] = []
    for image in images:
        for digest in [image.id, *image.layers]:
            if digest not in seen:
                seen.add(digest)
                order.append(digest)
    sent = 0
    for digest in order:
        path, offset, size = locate(digest)
        yield _tar_header(blob_member(digest), size)
        h = hashlib.sha256()
        fd = os.open(path, os.O_RDONLY)
        try:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, offset, size, os.POSIX_FADV_SEQUENTIAL)
            pos, end = offset, offset + size
            while pos < end:
                chunk = os.pread(fd, min(CHUNK_BYTES, end - pos), pos)
                if not chunk:
                    raise BundleError(f"unexpected end of {path} while loading {digest}", where=str(path),
                                      fix="re-run the upgrade with an intact bundle")
                h.update(chunk)
                pos += len(chunk)
                if progress_advance:
                    progress_advance(len(chunk))
                yield chunk
        finally:
            os.close(fd)
        if "sha256:" + h.hexdigest() != digest:
            if on_mismatch:
                on_mismatch(digest, path)
            raise BundleError(f"blob {digest} changed on disk (sha256 mismatch) while loading images",
                              where=str(path), fix="re-run the upgrade with an intact bundle")
        pad = -size % tarfile.BLOCKSIZE
        if pad:
            yield b"\0" * pad
        sent += 1
        if sent == 1 and after_first_blob:
            after_first_blob()
    manifest = json.dumps([{"Config": blob_member(i.id), "RepoTags": [i.ref],
                            "Layers": [blob_member(d) for d in i.layers]} for i in images]).encode()
    yield _tar_header("manifest.json", len(manifest))
    yield manifest + b"\0" * (-len(manifest) % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)
