"""``appliance snapshot DIR``: capture this node as an ``appliance-node-snapshot/1`` directory.

How: run detection through a :class:`RecordingHost`, a live host that says it is *not*
native, so every driver takes the path a replay takes (vendor CLIs, ``uname -a``, ``df``,
``docker version`` instead of NVML, ``os.uname`` or ``statvfs``), and keep every file it
read and every command it ran. Then add what each chip driver lists for support
(``snapshot_commands``, ``snapshot_paths``) and the node's own basics. A replay
(``appliance detect --snapshot DIR``) therefore reads exactly what the capture read and
gives the same inventory as a live detect (usage aside).

Layout (see docs/snapshot-format.md): ``DIR/root/<absolute path>`` for files (a symlink is
written as a small regular file holding its target, a device node as an empty file, as in
``shared/fixtures/nodes/h200-1gpu``), ``DIR/tool-output/<file>`` for each command's stdout and
``DIR/tool-output/index.json`` listing ``{"argv", "file", "exit_code"}`` per command.

The capture is written to a sibling temporary directory and renamed into place, so an
interrupted capture never leaves a half-written snapshot at ``DIR``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import stat
import threading
import time
from pathlib import Path

from pydantic import BaseModel, Field

from appliance import __version__
from appliance.atomic import replace_dir
from appliance.errors import SnapshotError
from appliance.inventory.hostview import SNAPSHOT_FORMAT, HostView, LiveHost
from appliance.subproc import CommandResult

# node basics recorded for support beside what detection itself runs
NODE_COMMANDS: tuple[tuple[str, ...], ...] = (("uname", "-a"), ("lscpu",), ("hostname",))
NODE_PATHS: tuple[str, ...] = ("/etc/os-release", "/etc/hostname", "/proc/sys/kernel/hostname",
                               "/proc/sys/kernel/osrelease", "/proc/meminfo", "/proc/cpuinfo", "/proc/modules",
                               "/proc/mounts", "/sys/devices/system/cpu/online")
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_TREE_FILES = 2000


class SnapshotSummary(BaseModel):
    """What ``appliance snapshot`` wrote."""

    directory: str
    format: str = SNAPSHOT_FORMAT
    files: int = 0
    commands: int = 0
    accelerators: int = 0
    seconds: float = 0.0
    warnings: list[str] = Field(default_factory=list)


class RecordingHost(HostView):
    """A live host (at ``root``) that records every read and command for a snapshot."""

    live = False      # drivers must take the replayable path ...
    native = False    # ... and not use in-process libraries
    source_label = "capture"

    def __init__(self, root: str | Path | None = None):
        self._live = LiveHost(root)
        self.root = self._live.root
        self._lock = threading.Lock()
        self.files: dict[str, bytes] = {}         # absolute path -> content (as read)
        self.links: dict[str, str] = {}           # absolute path -> link target
        self.dirs: set[str] = set()
        self.placeholders: set[str] = set()       # exist but not read (device nodes, sockets)
        self.commands: list[tuple[CommandResult, float]] = []

    # -- recording helpers ----------------------------------------------------------------
    def _note_entry(self, path: str) -> None:
        real = self._live.path(path)
        try:
            if real.is_dir():
                self.dirs.add(path)
            elif os.path.lexists(real):
                self.placeholders.add(path)
        except OSError:
            pass

    # -- HostView ---------------------------------------------------------------------------
    def read_text(self, path: str, max_bytes: int = 4 * 1024 * 1024) -> str | None:
        try:
            with open(self._live.path(path), "rb") as fh:
                data = fh.read(max_bytes)
        except (OSError, ValueError):
            return None
        with self._lock:
            self.files[path] = data
        return data.decode("utf-8", errors="replace")

    def exists(self, path: str) -> bool:
        found = self._live.exists(path)
        if found:
            with self._lock:
                self._note_entry(path)
        return found

    def is_dir(self, path: str) -> bool:
        found = self._live.is_dir(path)
        if found:
            with self._lock:
                self.dirs.add(path)
        return found

    def listdir(self, path: str) -> list[str]:
        names = self._live.listdir(path)
        with self._lock:
            if self._live.is_dir(path):
                self.dirs.add(path)
            for name in names:
                self._note_entry(f"{path.rstrip('/')}/{name}")
        return names

    def readlink(self, path: str) -> str | None:
        target = self._live.readlink(path)
        if target is not None:
            with self._lock:
                self.links[path] = target
        return target

    def run(self, argv: list[str], timeout_s: float = 10.0) -> CommandResult:
        start = time.time()
        res = self._live.run(argv, timeout_s=timeout_s)
        if not res.not_found:
            with self._lock:
                self.commands.append((res, start))
        return res

    def has_tool(self, name: str) -> bool:
        return self._live.has_tool(name)

    # -- extras -----------------------------------------------------------------------------
    def copy_path(self, path: str, budget: list[int]) -> None:
        """Record a file or a directory tree (regular files only, size- and count-limited)."""
        real = self._live.path(path)
        try:
            st = os.lstat(real)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            target = self.readlink(path)
            if target is not None and real.is_dir():
                self.links.pop(path, None)
                self.is_dir(path)
            return
        if stat.S_ISDIR(st.st_mode):
            self.is_dir(path)
            for name in self._live.listdir(path):
                if budget[0] <= 0:
                    return
                self.copy_path(f"{path.rstrip('/')}/{name}", budget)
            return
        if stat.S_ISREG(st.st_mode) and budget[0] > 0 and st.st_size <= MAX_FILE_BYTES:
            budget[0] -= 1
            self.read_text(path, max_bytes=MAX_FILE_BYTES)
        elif not stat.S_ISREG(st.st_mode):
            with self._lock:
                self.placeholders.add(path)


def _slug(argv: list[str] | tuple[str, ...]) -> str:
    text = "_".join(argv)
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_.") or "command"
    if len(slug) > 80:
        slug = slug[:60] + "-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    return slug


def _check_target(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise SnapshotError("exists and is not a directory", where=str(directory),
                            fix="choose a new directory name")
    if directory.is_dir() and any(directory.iterdir()):
        raise SnapshotError("directory is not empty; refusing to write a snapshot into it", where=str(directory),
                            fix="choose a new or empty directory")
    parent = directory.resolve().parent
    if not parent.is_dir():
        raise SnapshotError("parent directory does not exist", where=str(parent),
                            fix="create it first or choose another place")


def _write_root(rec: RecordingHost, root_dir: Path) -> int:
    """Materialize recorded files, links, directories and placeholders under ``root_dir``."""
    written = 0

    def target(path: str) -> Path:
        rel = os.path.normpath(path.lstrip("/"))
        if rel.startswith(".."):
            raise SnapshotError(f"refusing to record a path outside the root: {path}", where="snapshot")
        return root_dir / rel

    # directories that something else lives under must be directories, so write dirs first
    # and let them win over a link/placeholder at the same path.
    parents = {str(Path(p).parent) for p in list(rec.files) + list(rec.links) + list(rec.placeholders)}
    for path in sorted(rec.dirs | parents):
        if path in ("/", ""):
            continue
        target(path).mkdir(parents=True, exist_ok=True)
    # files as read; then links (as a small file holding the target) and placeholders (an
    # empty file), each only where nothing was written yet
    writes = ([(path, data, False) for path, data in sorted(rec.files.items())]
              + [(path, link.encode(), True) for path, link in sorted(rec.links.items())]
              + [(path, b"", True) for path in sorted(rec.placeholders)])
    for path, data, only_if_new in writes:
        t = target(path)
        if t.is_dir() or (only_if_new and t.exists()):
            continue
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_bytes(data)
        written += 1
    return written


def _write_tool_output(rec: RecordingHost, out_dir: Path) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    seen: dict[tuple[str, ...], dict] = {}
    used: set[str] = {"index.json"}
    for res, _started in rec.commands:
        key = tuple(res.argv)
        if key in seen:
            continue  # the first run is what detection saw
        base = _slug(res.argv)
        name = f"{base}.txt"
        n = 2
        while name in used:
            name = f"{base}-{n}.txt"
            n += 1
        used.add(name)
        (out_dir / name).write_text(res.stdout or "", encoding="utf-8")
        entry: dict = {"argv": list(res.argv), "file": name, "exit_code": res.exit_code}
        if res.stderr:
            err_name = name[:-4] + ".stderr.txt"
            used.add(err_name)
            (out_dir / err_name).write_text(res.stderr, encoding="utf-8")
            entry["stderr_file"] = err_name
        if res.timed_out:
            entry["timed_out"] = True
        entry["seconds"] = round(res.seconds, 4)
        seen[key] = entry
        entries.append(entry)
    return entries


def capture(directory: str | Path, *, root: str | Path | None = None) -> SnapshotSummary:
    """Capture this node (or a live host at ``root``) into ``directory``; returns a summary."""
    from appliance.inventory.detect import detect
    from chip_drivers import all_drivers

    directory = Path(directory)
    _check_target(directory)
    start = time.monotonic()
    rec = RecordingHost(root)
    inv = detect(rec, usage=True)
    budget = [MAX_TREE_FILES]
    for path in NODE_PATHS:
        rec.copy_path(path, budget)
    for argv in NODE_COMMANDS:
        rec.run(list(argv), timeout_s=5.0)
    for driver in all_drivers():
        for path in getattr(driver, "snapshot_paths", ()) or ():
            rec.copy_path(path, budget)
        for argv in getattr(driver, "snapshot_commands", ()) or ():
            rec.run(list(argv), timeout_s=float(getattr(driver, "tool_timeout_s", 10.0)))

    tmp = directory.resolve().parent / f".{directory.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        files = _write_root(rec, tmp / "root")
        entries = _write_tool_output(rec, tmp / "tool-output")
        index = {
            "format": SNAPSHOT_FORMAT,
            "captured": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tool": f"appliance {__version__}",
            "commands": entries,
        }
        (tmp / "tool-output" / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
        if directory.is_dir():
            directory.rmdir()  # empty (checked above); the rename below needs the name free
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SnapshotSummary(directory=str(directory), files=files, commands=len(entries),
                           accelerators=len(inv.accelerators), seconds=round(time.monotonic() - start, 3),
                           warnings=list(inv.warnings))
