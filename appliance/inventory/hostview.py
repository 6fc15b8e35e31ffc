"""Host views: the only way detection touches a machine.

A host view reads files relative to a root, lists directories and runs tools.
:class:`LiveHost` is the real machine (root ``/``, tools run through
:mod:`appliance.subproc` with timeouts). :class:`SnapshotHost` replays a node
snapshot (``appliance-node-snapshot/1``): files from ``DIR/root/``, a tool's
output from ``DIR/tool-output/index.json`` matched by exact argv; a command
absent from the index behaves as a tool that is not installed.

``native`` says whether library calls made in this process (NVML, ``os.uname``,
``os.statvfs``) describe the host view: only a :class:`LiveHost` whose root is ``/``.
A live host pointed at another root (``APPLIANCE_HOST_ROOT``, used by tests and support
to replay a copied filesystem with fake tools on ``PATH``) reads files from that root and
runs tools from ``PATH``, but skips vendor libraries. ``live`` says whether tools really
run; drivers use it only for wording, never to pick a code path that a snapshot could not
replay (that is what ``native`` is for).

``APPLIANCE_TOOL_TIMEOUT_S`` caps every tool timeout of a live host (tests use it to keep
"a tool that hangs" short; support can raise nothing above a driver's own limit).

Symlinks: on a live node ``readlink`` follows the filesystem. A snapshot may hold a
symlink as a small regular file whose content is the link target (git and read-only
copies do not keep symlinks), and ``readlink`` returns that content.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from appliance.errors import SnapshotError
from appliance.subproc import CommandResult
from appliance.subproc import run as _run
from appliance.subproc import which as _which

SNAPSHOT_FORMAT = "appliance-node-snapshot/1"


class HostView:
    """Interface shared by live and snapshot hosts. Paths are absolute, e.g. ``/proc/meminfo``."""

    live: bool = True
    native: bool = False
    root: Path

    def path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def read_text(self, path: str, max_bytes: int = 4 * 1024 * 1024) -> str | None:
        """File contents, or None when it does not exist or cannot be read."""
        try:
            with open(self.path(path), "rb") as fh:
                return fh.read(max_bytes).decode("utf-8", errors="replace")
        except (OSError, ValueError):
            return None

    def read_value(self, path: str) -> str | None:
        """A one-line sysfs/proc value, stripped."""
        text = self.read_text(path, max_bytes=4096)
        return None if text is None else text.strip()

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.path(path))

    def is_dir(self, path: str) -> bool:
        return self.path(path).is_dir()

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(path)))
        except OSError:
            return []

    def readlink(self, path: str) -> str | None:
        p = self.path(path)
        try:
            if p.is_symlink():
                return os.readlink(p)
            if p.is_file() and p.stat().st_size < 1024:
                text = p.read_text(errors="replace").strip()
                return text or None
        except OSError:
            return None
        return None

    def run(self, argv: list[str], timeout_s: float = 10.0) -> CommandResult:  # pragma: no cover
        raise NotImplementedError

    def has_tool(self, name: str) -> bool:  # pragma: no cover
        raise NotImplementedError


HOST_ROOT_ENV = "APPLIANCE_HOST_ROOT"
# node facts ask the container engine this (here so the CLI can prefetch it without
# importing the inventory models)
DOCKER_VERSION_ARGV = ("docker", "version", "--format", "{{.Server.Version}}")
TOOL_TIMEOUT_ENV = "APPLIANCE_TOOL_TIMEOUT_S"


def tool_timeout_cap() -> float | None:
    """``APPLIANCE_TOOL_TIMEOUT_S`` as a float, or None when unset/invalid."""
    raw = os.environ.get(TOOL_TIMEOUT_ENV)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value > 0 else None


class LiveHost(HostView):
    """The machine we run on (optionally with files read from another root)."""

    live = True

    def __init__(self, root: str | Path | None = None):
        if root is None:
            root = os.environ.get(HOST_ROOT_ENV) or "/"
        self.root = Path(root)
        self.native = self.root.resolve() == Path("/")
        self._prefetched: dict[tuple[str, ...], tuple] = {}

    def run(self, argv: list[str], timeout_s: float = 10.0) -> CommandResult:
        pending = self._prefetched.pop(tuple(argv), None) if self._prefetched else None
        if pending is not None:
            thread, box = pending
            thread.join()
            if box:
                return box[0]
        return self._run_now(argv, timeout_s)

    def _run_now(self, argv: list[str], timeout_s: float) -> CommandResult:
        cap = tool_timeout_cap()
        if cap is not None:
            timeout_s = min(timeout_s, cap)
        return _run(argv, timeout_s=timeout_s)

    def prefetch(self, argv: list[str], timeout_s: float = 5.0) -> None:
        """Start ``argv`` now in a thread; the first ``run`` with the same argv gets its result.

        ``appliance detect`` uses this to let ``docker version`` run while Python is still
        importing the inventory code (the two overlap on a second core).
        """
        import threading

        box: list[CommandResult] = []
        thread = threading.Thread(target=lambda: box.append(self._run_now(list(argv), timeout_s)),
                                  name="prefetch", daemon=True)
        self._prefetched[tuple(argv)] = (thread, box)
        thread.start()

    def has_tool(self, name: str) -> bool:
        return _which(name) is not None


class SnapshotHost(HostView):
    """A captured node: ``DIR/root/`` plus ``DIR/tool-output/index.json``."""

    live = False

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        index_path = directory / "tool-output" / "index.json"
        if not directory.exists():
            raise SnapshotError(
                "snapshot directory does not exist", where=str(directory),
                fix="pass a directory made by `appliance snapshot DIR`")
        if not directory.is_dir():
            raise SnapshotError(
                "not a directory", where=str(directory),
                fix="pass a directory made by `appliance snapshot DIR`")
        if not (directory / "root").is_dir():
            raise SnapshotError(
                "not a node snapshot: it has no root/ directory", where=str(directory),
                fix="pass a directory made by `appliance snapshot DIR`")
        try:
            index = json.loads(index_path.read_text())
        except FileNotFoundError:
            raise SnapshotError(
                "not a node snapshot: tool-output/index.json is missing", where=str(index_path),
                fix='add an index ({"format": "%s", "commands": []}) or re-capture' % SNAPSHOT_FORMAT,
            ) from None
        except (OSError, ValueError) as exc:
            raise SnapshotError(
                f"malformed index: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                where=str(index_path),
                fix="re-capture the snapshot with `appliance snapshot DIR`") from None
        if not isinstance(index, dict) or not isinstance(index.get("commands"), list):
            raise SnapshotError(
                "malformed index: expected an object with a 'commands' list", where=str(index_path),
                fix="re-capture the snapshot with `appliance snapshot DIR`")
        fmt = index.get("format")
        if fmt != SNAPSHOT_FORMAT:
            raise SnapshotError(
                f"unsupported snapshot format {fmt!r}", where=f"{index_path}: format",
                fix=f"this version reads {SNAPSHOT_FORMAT}")
        self.directory = directory
        self.root = directory / "root"
        self.index = index
        self._commands: dict[tuple[str, ...], dict] = {}
        out_dir = (directory / "tool-output").resolve()
        for i, entry in enumerate(index["commands"]):
            where = f"{index_path}: commands[{i}]"
            if (not isinstance(entry, dict) or not isinstance(entry.get("argv"), list) or not entry["argv"]
                    or not all(isinstance(a, str) for a in entry["argv"])
                    or not isinstance(entry.get("file"), str)):
                raise SnapshotError(
                    "malformed command entry: needs 'argv' (a non-empty list of strings) and 'file' (a string)",
                    where=where, fix="re-capture the snapshot with `appliance snapshot DIR`")
            code = entry.get("exit_code", 0)
            if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
                raise SnapshotError(f"malformed exit_code {code!r}: expected an integer or null",
                                    where=f"{where}.exit_code", fix="re-capture the snapshot")
            out_path = (directory / "tool-output" / entry["file"]).resolve()
            if out_dir not in out_path.parents:
                raise SnapshotError(f"file {entry['file']!r} points outside tool-output/", where=f"{where}.file",
                                    fix="name a file inside tool-output/")
            if not entry.get("timed_out") and not out_path.is_file():
                raise SnapshotError(f"output file {entry['file']!r} is missing", where=f"{where}.file",
                                    fix="copy the file into tool-output/ or drop the entry from the index")
            self._commands[tuple(entry["argv"])] = entry

    def run(self, argv: list[str], timeout_s: float = 10.0) -> CommandResult:
        start = time.monotonic()
        entry = self._commands.get(tuple(argv))
        if entry is None:
            return CommandResult(argv=list(argv), exit_code=None, not_found=True)
        if entry.get("timed_out"):
            return CommandResult(argv=list(argv), exit_code=None, timed_out=True,
                                 seconds=float(entry.get("seconds", timeout_s)))
        out_path = self.directory / "tool-output" / entry["file"]
        try:
            stdout = out_path.read_text(errors="replace")
        except OSError as exc:
            return CommandResult(argv=list(argv), exit_code=None, error=f"snapshot output missing: {exc}")
        stderr = ""
        if entry.get("stderr_file"):
            try:
                stderr = (self.directory / "tool-output" / entry["stderr_file"]).read_text(errors="replace")
            except OSError:
                stderr = ""
        code = entry.get("exit_code", 0)
        return CommandResult(argv=list(argv), exit_code=code, stdout=stdout,
                             error=None if code is not None else "recorded without an exit code",
                             stderr=stderr, seconds=time.monotonic() - start)

    def has_tool(self, name: str) -> bool:
        return any(key and key[0] == name for key in self._commands)
