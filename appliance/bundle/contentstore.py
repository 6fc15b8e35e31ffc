"""The node's content store: every blob of the installed and the previous release, by digest.

``<data_dir>/blobs/sha256/<hex>``. Why keep blobs on the node: a delta bundle carries only
what its base lacks, so the node must still hold the base's blobs; a rollback must be able
to reload the previous release's images even if someone pruned them from Docker; and a
re-run after a crash skips blobs already staged. Blobs enter the store only through
:meth:`ContentStore.ingest`, from a bundle whose blobs were verified, via a temp file renamed
into place; and every *use* of a stored blob hashes it again (a damaged one is dropped and
staged anew from the next bundle that has it). After each commit the store is trimmed to
the blobs of the current and the previous release.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from appliance.atomic import place_file
from appliance.bundle.manifest import Blob, Manifest, digest_hex
from appliance.bundle.reader import CHUNK_BYTES, BundleIndex, default_workers
from appliance.errors import BundleError
from appliance.progress import NullProgress, Progress


def store_root() -> Path:
    from appliance.paths import data_dir

    return data_dir() / "blobs" / "sha256"


class ContentStore:
    def __init__(self, root: Path | None = None):
        self.root = root or store_root()

    def path(self, digest: str) -> Path:
        return self.root / digest_hex(digest)

    def has(self, blob: Blob) -> bool:
        try:
            return self.path(blob.digest).stat().st_size == blob.size
        except FileNotFoundError:
            return False

    def missing(self, manifest: Manifest, *, bundled: set[str]) -> list[Blob]:
        """Blobs the release needs that are neither in the bundle nor in this store."""
        return [b for b in manifest.blobs if b.digest not in bundled and not self.has(b)]

    def ingest(self, index: BundleIndex, blobs: list[Blob], progress: Progress | None = None,
               workers: int | None = None, *, hashed: bool = True) -> int:
        """Copy ``blobs`` from the bundle into the store (atomic rename); returns bytes copied.

        ``hashed=False`` copies in the kernel (``copy_file_range``: no pass through Python,
        little CPU) for blobs this process has just verified; it is what lets staging run
        beside a ``docker load`` without slowing it. Stored blobs are hashed again whenever
        they are used, so a copy can never be trusted blindly.
        """
        progress = progress or NullProgress()
        todo = sorted((b for b in blobs if not self.has(b)), key=lambda b: -b.size)
        total = sum(b.size for b in todo)
        if not todo:
            return 0
        task = progress.task("stage", total)
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(index.path, os.O_RDONLY)
        try:
            def one(blob: Blob) -> None:
                offset = index.blob_members[blob.digest].offset_data
                if hashed:
                    self._copy_in(fd, offset, blob, task.advance)
                else:
                    self._copy_in_kernel(fd, offset, blob, task.advance)

            with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
                list(pool.map(one, todo))
        finally:
            os.close(fd)
            task.done()
        return total

    def _copy_in(self, src_fd: int, offset: int, blob: Blob, advance) -> None:
        writer = self.writer(blob)
        try:
            pos, end = offset, offset + blob.size
            while pos < end:
                chunk = os.pread(src_fd, min(CHUNK_BYTES, end - pos), pos)
                if not chunk:
                    raise BundleError(f"unexpected end of the bundle while staging {blob.digest}",
                                      fix="copy the bundle again")
                writer.write(chunk)
                pos += len(chunk)
                advance(len(chunk))
            writer.commit()
        finally:
            writer.abort()

    def _copy_in_kernel(self, src_fd: int, offset: int, blob: Blob, advance) -> None:
        out_fd, tmp = tempfile.mkstemp(prefix=".in-", dir=self.root)
        try:
            pos, written = offset, 0
            while written < blob.size:
                want = min(1 << 30, blob.size - written)
                try:
                    n = os.copy_file_range(src_fd, out_fd, want, pos, written)
                except OSError:  # no kernel copy between these file systems: plain copy
                    n = 0
                    chunk = os.pread(src_fd, min(CHUNK_BYTES, want), pos)
                    if chunk:
                        os.pwrite(out_fd, chunk, written)
                        n = len(chunk)
                if n <= 0:
                    raise BundleError(f"unexpected end of the bundle while staging {blob.digest}",
                                      fix="copy the bundle again")
                pos += n
                written += n
                advance(n)
            os.close(out_fd)
            out_fd = -1
            # no fsync per blob: every use of a stored blob hashes it again (see StoreWriter.commit)
            place_file(tmp, self.path(blob.digest), mode=0o444, fsync=False)
        finally:
            if out_fd >= 0:
                os.close(out_fd)
            if os.path.exists(tmp):
                os.unlink(tmp)

    def writer(self, blob: Blob) -> "StoreWriter":
        self.root.mkdir(parents=True, exist_ok=True)
        return StoreWriter(self, blob)

    def drop(self, digest: str) -> None:
        """Remove a stored blob found corrupt (it is staged again from the next bundle that has it)."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            pass

    def locator(self, index: BundleIndex | None):
        """``digest -> (file, offset, size)``: from the bundle when it holds the blob, else from the store."""
        def locate(digest: str) -> tuple[str, int, int]:
            if index is not None and digest in index.blob_members:
                m = index.blob_members[digest]
                return str(index.path), m.offset_data, m.size
            p = self.path(digest)
            return str(p), 0, p.stat().st_size
        return locate

    def materialize(self, blob_digest: str, target: Path, mode: int) -> None:
        """Place a stored blob at ``target``: a hard link (read-only, no copy) unless it must be executable."""
        target.parent.mkdir(parents=True, exist_ok=True)
        src = self.path(blob_digest)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        if not mode & 0o111:
            try:
                os.link(src, tmp)
                place_file(tmp, target, fsync=False)  # a link to a stored blob: no new bytes
                return
            except OSError:
                pass
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while True:
                chunk = fin.read(CHUNK_BYTES)
                if not chunk:
                    break
                fout.write(chunk)
        place_file(tmp, target, mode=mode)

    def digests(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {"sha256:" + p.name for p in self.root.iterdir() if len(p.name) == 64}

    def gc(self, keep: set[str]) -> int:
        """Delete blobs not in ``keep`` (and stale temp files); returns bytes freed."""
        freed = 0
        if not self.root.is_dir():
            return 0
        for p in self.root.iterdir():
            name = p.name
            if len(name) == 64 and "sha256:" + name in keep:
                continue
            try:
                freed += p.stat().st_size
                p.unlink()
            except FileNotFoundError:
                pass
        return freed


class StoreWriter:
    """Writes one blob into the store: a temp file, hashed as written, renamed into place only
    when the digest matches (so a name in the store always means that content)."""

    def __init__(self, store: ContentStore, blob: Blob):
        self.blob = blob
        self.target = store.path(blob.digest)
        self.fd, self.tmp = tempfile.mkstemp(prefix=".in-", dir=store.root)
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(chunk)

    def commit(self) -> None:
        """Rename into place after checking size and digest. No fsync per blob: every use of a
        stored blob hashes it again, and a corrupt one is dropped and staged anew."""
        os.close(self.fd)
        self.fd = -1
        if self.size != self.blob.size or "sha256:" + self.hash.hexdigest() != self.blob.digest:
            raise BundleError(f"blob {self.blob.digest} changed between verification and staging",
                              fix="keep the bundle file unchanged during the upgrade and re-run it")
        # read-only: release files may be hard links to it
        place_file(self.tmp, self.target, mode=0o444, fsync=False)
        self.tmp = None

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.tmp and os.path.exists(self.tmp):
            os.unlink(self.tmp)
        self.tmp = None
