"""Atomic, durable file writes: the one way appliance replaces a file or directory on disk.

Why one helper: a box loses power. A config, key file or manifest that is half written, or
renamed into place before its bytes reached the disk, is worse than the old one. Every write
here goes to a temporary file in the same directory, is flushed and ``fsync``-ed, renamed over
the target (atomic on POSIX), and then the directory is ``fsync``-ed so the rename itself
survives a crash. Readers (the gateway, the apps, the next ``appliance`` command) therefore see
either the old content or the new one, never a mix.

* :func:`write_atomic` -- bytes or text, with mode and optional owner;
* :func:`write_if_changed` -- the same, skipped when the content is already there (so re-runs
  change nothing and touch no mtime);
* :func:`atomic_output` -- a context manager for streamed writes (bundles, blobs): the target
  appears only when the block ends without an error;
* :func:`replace_dir` -- put a fully written directory in place of another;
* :func:`fsync_dir` -- make a rename or link in ``directory`` durable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory so that renames/links in it are on disk (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> str:
    return f".{path.name}.{os.getpid()}.tmp"


def write_atomic(path: str | os.PathLike, data: bytes | str, *, mode: int = 0o644,
                 owner_uid: int | None = None, owner_gid: int | None = None, fsync: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename + fsync of the dir).

    Parent directories are created. ``mode`` is applied before the rename, so a secret file is
    never readable by others, not even for an instant. Raises ``OSError`` (callers map it to
    their typed error, naming the file).
    """
    path = Path(path)
    with atomic_output(path, mode=mode, fsync=fsync, owner_uid=owner_uid, owner_gid=owner_gid) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def write_if_changed(path: str | os.PathLike, data: bytes | str, *, mode: int = 0o644) -> bool:
    """:func:`write_atomic` unless ``path`` already holds exactly ``data``; True when written."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if path.read_bytes() == payload:
            if (path.stat().st_mode & 0o7777) != mode:
                os.chmod(path, mode)
            return False
    except OSError:
        pass
    write_atomic(path, payload, mode=mode)
    return True


@contextmanager
def atomic_output(path: str | os.PathLike, *, mode: int = 0o644, fsync: bool = True,
                  owner_uid: int | None = None, owner_gid: int | None = None) -> Iterator[IO[bytes]]:
    """Stream into ``path``: yields a binary file; the target appears only if the block succeeds.

    Mode and owner are set on the temporary file, before the rename. On an exception the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_name(path), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if owner_uid is not None or owner_gid is not None:
            os.chown(tmp, -1 if owner_uid is None else owner_uid, -1 if owner_gid is None else owner_gid)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)


def place_file(tmp: str | os.PathLike, path: str | os.PathLike, *, mode: int | None = None,
               fsync: bool = True) -> None:
    """Rename an already written temporary file (same directory) over ``path``, durably.

    For writers that must produce the temp file themselves (a kernel copy, a hash checked before
    the rename). ``fsync`` covers the file's bytes and the rename.
    """
    if mode is not None:
        os.chmod(tmp, mode)
    if fsync:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, path)
    if fsync:
        fsync_dir(Path(path).parent)


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Put the fully written directory ``tmp`` at ``final`` (same parent), replacing any old one.

    A directory cannot be renamed over a non-empty one, so an old ``final`` is first moved aside
    (``.<name>.old``) and removed after the swap; between the two renames a reader sees either
    the old or the new directory name missing for an instant, never a half-written tree.
    """
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)
