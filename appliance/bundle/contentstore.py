"""The node's content store: every blob of the installed and the previous release, by digest.

``<data_dir>/blobs/sha256/<hex>``. Why keep blobs on the node: a delta bundle carries only
what its base lacks, so the node must still hold the base's blobs; a rollback must be able
to reload the previous release's images even if someone pruned them from Docker; and a
re-run after a crash skips blobs already staged. Blobs enter the store only through
:meth:`ContentStore.ingest`, which hashes while copying and renames into place only on a
match, so a file in the store always has the digest it is named by. After each commit the
store is trimmed to the blobs of the current and the previous release.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from appliance.bundle.manifest import Blob, Manifest, digest_hex
from appliance.bundle.progress import NullProgress, Progress
from appliance.bundle.reader import CHUNK_BYTES, BundleIndex, default_workers
from appliance.errors import BundleError


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
               workers: int | None = None) -> int:
        """Copy ``blobs`` from the bundle into the store (hashing, atomic rename); returns bytes copied."""
        progress = progress or NullProgress()
        todo = [b for b in blobs if not self.has(b)]
        todo.sort(key=lambda b: -b.size)
        total = sum(b.size for b in todo)
        task = progress.task("stage", total)
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(index.path, os.O_RDONLY)
        try:
            def one(blob: Blob) -> None:
                member = index.blob_members[blob.digest]
                self._copy_in(fd, member.offset_data, blob, task.advance)

            with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
                list(pool.map(one, todo))
        finally:
            os.close(fd)
            task.done()
        return total

    def _copy_in(self, src_fd: int, offset: int, blob: Blob, advance) -> None:
        out_fd, tmp = tempfile.mkstemp(prefix=".in-", dir=self.root)
        try:
            h = hashlib.sha256()
            buf = bytearray(CHUNK_BYTES)
            view = memoryview(buf)
            pos, remaining = offset, blob.size
            while remaining:
                n = os.preadv(src_fd, [view[:min(CHUNK_BYTES, remaining)]], pos)
                if n <= 0:
                    raise BundleError(f"unexpected end of the bundle while staging {blob.digest}",
                                      fix="copy the bundle again")
                h.update(view[:n])
                mv = view[:n]
                while mv:
                    written = os.write(out_fd, mv)
                    mv = mv[written:]
                pos += n
                remaining -= n
                advance(n)
            if "sha256:" + h.hexdigest() != blob.digest:
                raise BundleError(f"blob {blob.digest} changed between verification and staging",
                                  fix="keep the bundle file unchanged during the upgrade and re-run it")
            os.fsync(out_fd)
            os.close(out_fd)
            out_fd = -1
            os.chmod(tmp, 0o444)  # read-only: release files may be hard links to it
            os.replace(tmp, self.path(blob.digest))
        finally:
            if out_fd >= 0:
                os.close(out_fd)
            if os.path.exists(tmp):
                os.unlink(tmp)

    def materialize(self, blob_digest: str, target: Path, mode: int) -> None:
        """Place a stored blob at ``target``: a hard link (read-only, no copy) unless it must be executable."""
        target.parent.mkdir(parents=True, exist_ok=True)
        src = self.path(blob_digest)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        if not mode & 0o111:
            try:
                os.link(src, tmp)
                os.replace(tmp, target)
                return
            except OSError:
                pass
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while True:
                chunk = fin.read(CHUNK_BYTES)
                if not chunk:
                    break
                fout.write(chunk)
        os.chmod(tmp, mode)
        os.replace(tmp, target)

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
