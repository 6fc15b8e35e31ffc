"""Per-instance operation locks: one ``flock`` file per (domain, instance) in the data dir.

Why a file lock and not a row in the state database: the kernel releases it when the holder
dies (a killed ``init`` or agent never leaves a stale lock behind), and a second process can
ask "is anyone converging?" without waiting (``wait=False``). Each domain has its own lock
file -- ``runtime-<instance>.lock`` (converge), ``train-<instance>.lock`` (job scheduling),
``bundle-<instance>.lock`` (upgrade/rollback) -- so holding one never blocks the others.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def lock_path(domain: str, instance: str) -> Path:
    from appliance.paths import data_dir

    return data_dir() / f"{domain}-{instance}.lock"


@contextmanager
def instance_lock(domain: str, instance: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold ``<data_dir>/<domain>-<instance>.lock`` exclusively for the ``with`` block.

    Yields True when held; with ``wait=False`` yields False at once (holding nothing) when
    another process has it, so the caller decides what "busy" means.
    """
    path = lock_path(domain, instance)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
