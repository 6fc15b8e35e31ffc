"""Open a bundle without trusting it: tar structure, signature, entries, per-blob hashes.

Order matters: the cheap structural checks (entry names and types, truncation, the
signature, missing/extra entries) read only tar headers and the manifest, so a bad bundle
is refused in milliseconds. Blob hashing then reads every byte once, several blobs at a
time in threads (``hashlib`` releases the GIL), straight from a read-only memory map (no
copy out of the page cache) whose pages are dropped after each chunk, so memory stays flat
whatever the bundle size (``os.pread`` into a 1 MiB buffer where mmap is unavailable).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from appliance.bundle import keys as keymod
from appliance.bundle.manifest import (
    BLOB_PREFIX,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_ENTRIES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE_NAME,
    Manifest,
    parse_manifest,
)
from appliance.errors import BundleError
from appliance.progress import NullProgress, Progress

CHUNK_BYTES = 1024 * 1024
HASH_CHUNK_BYTES = 4 * 1024 * 1024
_FIX_REBUILD = "get an intact copy of the bundle from your vendor"


@dataclass(frozen=True)
class Member:
    name: str
    offset_data: int
    size: int


@dataclass
class BundleIndex:
    """What the tar holds (from headers only) plus the raw manifest and signature bytes."""

    path: Path
    file_size: int
    manifest_bytes: bytes
    sig_bytes: bytes
    blob_members: dict[str, Member] = field(default_factory=dict)  # "sha256:<hex>" -> member


@dataclass
class OpenedBundle:
    index: BundleIndex
    manifest: Manifest
    signer: keymod.TrustedKey | None

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.index.manifest_bytes).hexdigest()


class VerifyReport(BaseModel):
    file: str
    ok: bool
    version: str
    upgrades_from: list[str]
    created: str
    delta: bool
    base_version: str | None
    signer_key_id: str | None
    signer_key_path: str | None
    images: list[str]
    files: int
    blobs: int
    blobs_in_bundle: int
    bytes_hashed: int
    file_size_bytes: int
    seconds: float
    throughput_mb_s: float


def _entry_problem(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith("/"):
        return f"entry {name!r} has an absolute path"
    if ".." in name.split("/"):
        return f"entry {name!r} escapes the bundle with '..'"
    if member.issym() or member.islnk():
        kind = "symbolic" if member.issym() else "hard"
        return f"entry {name!r} is a {kind} link (to {member.linkname!r}); bundles hold regular files only"
    if member.ischr() or member.isblk() or member.isfifo():
        return f"entry {name!r} is a device or fifo; bundles hold regular files only"
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return f"entry {name!r} has unsupported type {member.type!r}; bundles hold regular files only"
    return None


def _read_exact(fd: int, offset: int, size: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise BundleError(f"truncated while reading {size} bytes at offset {offset}", where=None,
                          fix=_FIX_REBUILD)
    return data


def scan(path: Path, *, on_head=None) -> BundleIndex:
    """Read the tar headers and check the structure; no blob data is read.

    ``on_head(manifest_bytes, sig_bytes)`` runs as soon as the first two entries are read, before
    any further header: :func:`open_bundle` verifies the signature and parses the manifest there
    and returns how many blob entries the bundle may have, so a forged bundle is refused before
    anything else of it is read, and one with more entries than its manifest lists stops at the
    first extra. Without it, at most ``MAX_MANIFEST_ENTRIES`` entries are read."""
    where = str(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise BundleError("bundle file not found", where=where, fix="check the path") from None
    except OSError as exc:
        raise BundleError(f"cannot open the bundle: {exc.strerror}", where=where, fix="check the path") from None
    with fh:
        file_size = os.fstat(fh.fileno()).st_size
        manifest_bytes = sig_bytes = None
        blob_members: dict[str, Member] = {}
        limit = MAX_MANIFEST_ENTRIES
        end = 0
        try:
            tf = tarfile.open(fileobj=fh, mode="r:")
            position = 0
            while True:
                member = tf.next()
                if member is None:
                    break
                problem = _entry_problem(member)
                if problem:
                    raise BundleError(problem, where=where, fix=_FIX_REBUILD)
                data_end = member.offset_data + member.size
                if data_end > file_size:
                    raise BundleError(f"the file is truncated: entry {member.name!r} needs bytes up to "
                                      f"{data_end} but the file ends at {file_size}", where=where,
                                      fix="copy the bundle again (compare its size with the original)")
                end = data_end + (-member.size % tarfile.BLOCKSIZE)
                name = member.name
                if position == 0 and name != MANIFEST_NAME:
                    raise BundleError(f"first entry is {name!r}, expected {MANIFEST_NAME}", where=where,
                                      fix=_FIX_REBUILD)
                if position == 1 and name != SIGNATURE_NAME:
                    raise BundleError(f"second entry is {name!r}, expected {SIGNATURE_NAME}", where=where,
                                      fix=_FIX_REBUILD)
                if position == 0:
                    if member.size > MAX_MANIFEST_BYTES:
                        raise BundleError(f"manifest.json is {member.size} bytes (limit {MAX_MANIFEST_BYTES})",
                                          where=where, fix=_FIX_REBUILD)
                    manifest_bytes = _read_exact(fh.fileno(), member.offset_data, member.size)
                elif position == 1:
                    if member.size > MAX_SIGNATURE_BYTES:
                        raise BundleError(f"manifest.sig is {member.size} bytes (limit {MAX_SIGNATURE_BYTES})",
                                          where=where, fix=_FIX_REBUILD)
                    sig_bytes = _read_exact(fh.fileno(), member.offset_data, member.size)
                    if on_head is not None:
                        limit = on_head(manifest_bytes, sig_bytes)
                else:
                    if len(blob_members) >= limit:
                        raise BundleError(f"unexpected entry {name!r}: not listed in the manifest (extra file) -- "
                                          f"it lists {limit} blob entries", where=where, fix=_FIX_REBUILD)
                    hexpart = name[len(BLOB_PREFIX):] if name.startswith(BLOB_PREFIX) else ""
                    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
                        raise BundleError(f"unexpected entry {name!r} (extra file, not part of the bundle "
                                          "format)", where=where, fix=_FIX_REBUILD)
                    digest = "sha256:" + hexpart
                    if digest in blob_members:
                        raise BundleError(f"entry {name!r} appears twice", where=where, fix=_FIX_REBUILD)
                    blob_members[digest] = Member(name, member.offset_data, member.size)
                position += 1
                tf.members = []  # keep memory flat for bundles with many blobs
        except tarfile.TarError as exc:
            raise BundleError(f"not a readable bundle (tar): {exc}", where=where, fix=_FIX_REBUILD) from None
        if manifest_bytes is None or sig_bytes is None:
            raise BundleError("manifest.json or manifest.sig is missing (empty or truncated file)", where=where,
                              fix=_FIX_REBUILD)
        _check_end_of_archive(fh.fileno(), end, file_size, where)
    return BundleIndex(path=path, file_size=file_size, manifest_bytes=manifest_bytes, sig_bytes=sig_bytes,
                       blob_members=blob_members)


def _check_end_of_archive(fd: int, end: int, file_size: int, where: str) -> None:
    """After the last entry: two or more zero blocks, nothing else (tar pads to 10 KiB records)."""
    trailing = file_size - end
    if trailing < 2 * tarfile.BLOCKSIZE:
        raise BundleError(f"the file is truncated: the end-of-archive marker is missing after byte {end}",
                          where=where, fix="copy the bundle again (compare its size with the original)")
    if trailing > tarfile.RECORDSIZE + 2 * tarfile.BLOCKSIZE:
        raise BundleError(f"unexpected data after the last entry at byte {end} ({trailing} bytes; a corrupt "
                          "tar header or appended content)", where=where, fix=_FIX_REBUILD)
    tail = os.pread(fd, trailing, end)
    if tail.count(0) != len(tail):
        raise BundleError(f"unexpected data after the last entry at byte {end} (a corrupt tar header or "
                          "appended content)", where=where, fix=_FIX_REBUILD)


def open_bundle(path: Path, *, pubkey: Path | None = None, verify_signature: bool = True) -> OpenedBundle:
    """Scan the structure, verify the signature, parse the manifest, match entries to it."""
    where = str(path)
    head: dict = {}

    def verify_head(manifest_bytes: bytes, sig_bytes: bytes) -> int:
        # before any other entry is read: a forged or oversized manifest stops here
        if verify_signature:
            trusted, keys_from = keymod.trusted_keys(pubkey)
            head["signer"] = keymod.verify_signature(manifest_bytes, sig_bytes, trusted, keys_from, where)
        head["manifest"] = parse_manifest(manifest_bytes, where)
        return sum(1 for b in head["manifest"].blobs if b.in_bundle)

    index = scan(path, on_head=verify_head)
    manifest = head["manifest"]
    check_entries(index, manifest)
    return OpenedBundle(index=index, manifest=manifest, signer=head.get("signer"))


def check_entries(index: BundleIndex, manifest: Manifest) -> None:
    """No missing and no extra entries; sizes as listed."""
    where = str(index.path)
    listed = manifest.blob_map()
    for digest, member in index.blob_members.items():
        blob = listed.get(digest)
        if blob is None:
            raise BundleError(f"unexpected entry {member.name!r}: not listed in the manifest (extra file)",
                              where=where, fix=_FIX_REBUILD)
        if not blob.in_bundle:
            raise BundleError(f"unexpected entry {member.name!r}: the manifest says the base provides it",
                              where=where, fix=_FIX_REBUILD)
        if member.size != blob.size:
            raise BundleError(f"entry {member.name!r} is {member.size} bytes, the manifest says {blob.size}",
                              where=where, fix=_FIX_REBUILD)
    for blob in manifest.blobs:
        if blob.in_bundle and blob.digest not in index.blob_members:
            raise BundleError(f"blob {blob.digest} listed in the manifest is missing from the bundle",
                              where=where, fix=_FIX_REBUILD)


def hash_range(fd: int, offset: int, size: int, advance=None) -> str:
    """sha256 of ``size`` bytes at ``offset`` read in 1 MiB chunks (never the whole blob in memory)."""
    h = hashlib.sha256()
    remaining = size
    pos = offset
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    while remaining:
        n = os.preadv(fd, [view[:min(CHUNK_BYTES, remaining)]], pos)
        if n <= 0:
            raise BundleError(f"unexpected end of file at byte {pos}", fix=_FIX_REBUILD)
        h.update(view[:n])
        pos += n
        remaining -= n
        if advance:
            advance(n)
    return "sha256:" + h.hexdigest()


def hash_mapped(mm: mmap.mmap, offset: int, size: int, advance=None) -> str:
    """sha256 of a range of a read-only mapping, without copying it out of the page cache.

    After each chunk its pages are dropped from this process (MADV_DONTNEED: the file stays in
    the page cache, it just stops counting as our resident memory), so RSS stays flat.
    """
    h = hashlib.sha256()
    view = memoryview(mm)
    page = mmap.PAGESIZE
    try:
        pos, end = offset, offset + size
        released = offset - offset % page
        while pos < end:
            n = min(HASH_CHUNK_BYTES, end - pos)
            h.update(view[pos:pos + n])
            pos += n
            upto = pos - pos % page
            if upto > released:
                mm.madvise(mmap.MADV_DONTNEED, released, upto - released)
                released = upto
            if advance:
                advance(n)
    finally:
        view.release()
    return "sha256:" + h.hexdigest()


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def hash_blobs(opened: OpenedBundle, progress: Progress | None = None, workers: int | None = None) -> int:
    """Check every bundled blob's sha256 against the manifest, in parallel; returns bytes hashed.

    Largest blobs first so the threads finish together; each thread hashes whole blobs (a
    sha256 cannot be split), so one huge layer is hashed by one core.
    """
    progress = progress or NullProgress()
    where = str(opened.index.path)
    jobs = sorted(opened.index.blob_members.items(), key=lambda dm: -dm[1].size)
    total = sum(m.size for _, m in jobs)
    task = progress.task("verify", total)
    fd = os.open(opened.index.path, os.O_RDONLY)
    mm = None
    try:
        if os.fstat(fd).st_size != opened.index.file_size:
            raise BundleError("the bundle file changed while it was being verified", where=where,
                              fix="do not modify the bundle during verification; re-run")
        if total:
            try:
                mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                mm.madvise(mmap.MADV_SEQUENTIAL)
            except (OSError, ValueError, AttributeError):
                mm = None  # e.g. a file system without mmap: fall back to pread

        def one(job: tuple[str, Member]) -> tuple[str, str]:
            digest, member = job
            if mm is not None:
                return digest, hash_mapped(mm, member.offset_data, member.size, task.advance)
            return digest, hash_range(fd, member.offset_data, member.size, task.advance)

        with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
            for digest, actual in pool.map(one, jobs):
                if actual != digest:
                    raise BundleError(f"blob {digest} does not match its digest (got {actual}): the bundle "
                                      "is corrupted or was tampered with", where=where, fix=_FIX_REBUILD)
    finally:
        if mm is not None:
            mm.close()
        os.close(fd)
        task.done()
    return total


def verify_bundle(path: Path, *, pubkey: Path | None = None, progress: Progress | None = None,
                  workers: int | None = None) -> VerifyReport:
    """Everything `appliance bundle verify` checks: structure, signature, entries, every hash."""
    start = time.monotonic()
    opened = open_bundle(path, pubkey=pubkey)
    hashed = hash_blobs(opened, progress, workers)
    seconds = time.monotonic() - start
    m = opened.manifest
    return VerifyReport(
        file=str(path), ok=True, version=m.version, upgrades_from=m.upgrades_from, created=m.created,
        delta=m.is_delta, base_version=m.base.version if m.base else None,
        signer_key_id=opened.signer.key_id if opened.signer else None,
        signer_key_path=opened.signer.path if opened.signer else None,
        images=[i.ref for i in m.images], files=len(m.files), blobs=len(m.blobs),
        blobs_in_bundle=len(opened.index.blob_members), bytes_hashed=hashed,
        file_size_bytes=opened.index.file_size, seconds=round(seconds, 3),
        throughput_mb_s=round(opened.index.file_size / 1e6 / seconds, 1) if seconds > 0 else 0.0)

