"""Who our containers run as, and handing them the host files they must read or write.

Why one module: our containers run as their own non-root accounts
(:data:`appliance.runtime.pyrt.ACCOUNTS`), while the files they use -- the gateway's config
directory, an app's key file, an engine's secret -- are written by the appliance. On a box the
appliance runs as root and hands each file to the account that uses it (:func:`hand_over`), so
a key file can stay 0600. A process that is not root cannot give a file away; then containers
run as the appliance's own uid and gid instead (:func:`container_user`), which owns every file
it writes -- either way each container can read exactly its own files, and nothing here fails
for lack of privileges.
"""

from __future__ import annotations

import os
from pathlib import Path


def privileged() -> bool:
    """True when this process may hand files to other uids (it runs as root)."""
    return os.geteuid() == 0


def owner_uid(uid: int) -> int | None:
    """The uid a file for account ``uid`` is handed to: ``uid`` as root, None (keep the
    appliance's own) otherwise."""
    return uid if privileged() else None


def container_user(uid: int) -> str:
    """Docker's ``User`` for a container of account ``uid``: ``uid:uid``, or this process's own
    ``uid:gid`` when it cannot hand files over (then it owns every file the container reads)."""
    if privileged():
        return f"{uid}:{uid}"
    return f"{os.geteuid()}:{os.getegid()}"


def user_uid(user: str | None) -> int | None:
    """The uid of a Docker ``User`` value (``"65531:65531"`` -> 65531; None for none or a name)."""
    head = (user or "").split(":", 1)[0]
    return int(head) if head.isdigit() else None


def hand_over(path: str | os.PathLike, uid: int | None, *, recursive: bool = False) -> bool:
    """Give ``path`` (and, ``recursive``, everything below it) to ``uid``:``uid`` where it is
    owned by someone else; True when anything changed. Nothing to do (False) without a uid, when
    this process is not root, or for a path that does not exist. Links are never followed."""
    if uid is None or not privileged():
        return False
    root = Path(path)
    changed = False
    paths = [root]
    if recursive and root.is_dir() and not root.is_symlink():
        for dirpath, dirs, files in os.walk(root):
            paths += [Path(dirpath) / n for n in dirs + files]
    for p in paths:
        try:
            st = p.lstat()
        except OSError:
            continue
        if (st.st_uid, st.st_gid) != (uid, uid):
            os.chown(p, uid, uid, follow_symlinks=False)
            changed = True
    return changed
