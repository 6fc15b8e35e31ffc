"""The local Python runtime base image (``appliance/pyrt``), built from the HOST's interpreter.

Why: the appliance must come up on a box with no registry and no internet, so nothing can be
pulled -- not even ``python:3-slim``. Every Python already installed on the host is a
complete, tested runtime; copying it (the binary, the standard library, the extension
modules and exactly the shared libraries ``ldd`` lists for them) into a ``FROM scratch``
image gives a ~66 MB base that builds in seconds and runs the stdlib-only services in
``images/`` (demo engine, gateway, apps, demo trainer).

The image is never staged on disk: the build context is written as one tar stream straight
from the host files (see :func:`write_context`). Its tag carries the Python version and a
fingerprint of the interpreter and its standard library, so a changed host Python gives a
new tag and an unchanged one is never rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import sysconfig
import tarfile
from pathlib import Path

REPOSITORY = "appliance/pyrt"
PYTHONHOME = "/usr/local"
LAYOUT_VERSION = 3  # bump when what goes into the image changes (gives a new tag)
# Libraries glibc loads with dlopen (so ldd does not list them) that Python needs:
# libgcc_s for thread exit/cancellation (without it every threaded server aborts on exit).
DLOPENED = ("libgcc_s.so.1",)

# Top-level stdlib entries the services never need (size, attack surface).
_SKIP_TOP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages",
             "dist-packages", "lib-dynload", "lib2to3", "pydoc_data", "venv"}
_SKIP_DYNLOAD = re.compile(r"^(_tkinter|_test|xxlimited|xxsubtype|_xxtestfuzz|_ctypes_test)")
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)")


def python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def _xy() -> str:
    return f"python{sys.version_info[0]}.{sys.version_info[1]}"


def interpreter() -> Path:
    return Path(os.path.realpath(sys.executable))


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def dynload_dir() -> Path:
    dest = sysconfig.get_config_var("DESTSHARED")
    if dest and Path(dest).is_dir():
        return Path(dest)
    return Path(sysconfig.get_paths()["platstdlib"]) / "lib-dynload"


def _stdlib_files() -> list[tuple[Path, str]]:
    """(host file, path inside the image) for the standard library, with compiled caches."""
    src = stdlib_dir()
    dest = f"usr/local/lib/{_xy()}"
    tag = sys.implementation.cache_tag  # cpython-311: keep only non-optimised caches
    out: list[tuple[Path, str]] = []
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in _SKIP_TOP and not d.startswith("config-")]
        dirs.sort()
        in_cache = os.path.basename(root) == "__pycache__"
        for name in sorted(files):
            if in_cache:
                if not name.endswith(f".{tag}.pyc"):
                    continue
            elif name.endswith((".pyc", ".pyo", ".a", ".o")) or name.endswith(".exe"):
                continue
            path = Path(root) / name
            out.append((path, os.path.normpath(f"{dest}/{rel}/{name}")))
    return out


def _dynload_files() -> list[tuple[Path, str]]:
    src = dynload_dir()
    dest = f"usr/local/lib/{_xy()}/lib-dynload"
    return [(src / n, f"{dest}/{n}") for n in sorted(os.listdir(src))
            if n.endswith(".so") and not _SKIP_DYNLOAD.match(n)]


def fingerprint() -> str:
    """A cheap hash of what goes into the image (paths, sizes, mtimes; no file reads).

    Cheap enough to run on every ``init``: it is how we know the base image is current
    without staging anything.
    """
    h = hashlib.sha256()
    h.update(f"pyrt/{LAYOUT_VERSION} {sys.version}\n".encode())
    for path, arc in [(interpreter(), "usr/local/bin/python3")] + _stdlib_files() + _dynload_files():
        try:
            st = path.stat()
        except OSError:
            continue
        h.update(f"{arc} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def image_tag(fp: str | None = None) -> str:
    return f"{REPOSITORY}:{python_version()}-{fp or fingerprint()}"


def shared_libraries(binaries: list[Path]) -> list[str]:
    """Every shared library ``ldd`` lists for ``binaries`` (absolute paths, as the loader wants),
    plus :data:`DLOPENED` found beside libc."""
    from appliance.errors import RuntimeFailure
    from appliance.subproc import run

    libs: set[str] = set()
    # ldd accepts many files at once; batches keep the argv short.
    for start in range(0, len(binaries), 64):
        batch = [str(b) for b in binaries[start:start + 64]]
        res = run(["ldd", *batch], timeout_s=60)
        if res.not_found:
            raise RuntimeFailure("ldd is not installed, so the Python runtime image cannot be built",
                                 where="images/base", fix="install libc-bin (it provides ldd)")
        for line in res.stdout.splitlines():
            m = _LDD_LINE.match(line)
            if m:
                libs.add(m.group(1))
    libc_dirs = sorted({os.path.dirname(p) for p in libs if os.path.basename(p).startswith("libc.so")})
    for name in DLOPENED:
        for d in libc_dirs:
            if os.path.exists(os.path.join(d, name)):
                libs.add(os.path.join(d, name))
                break
    return sorted(libs)


_DOCKERFILE = """\
# The appliance Python runtime: the host's CPython {version}, its stdlib and the shared
# libraries it links, on an empty (scratch) base. Generated by appliance.runtime.pyrt.
FROM scratch
COPY . /
ENV PYTHONHOME={home} PATH=/usr/local/bin PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8
"""

# The accounts our containers run as (uid = gid; appliance.runtime.compose gives each role its own).
# Why these numbers: one account per role keeps apart, on the host too, what each may read (the
# gateway's upstream keys are not the apps'); none is ``nobody`` (65534), which host daemons and
# NFS root squashing run as -- any such process could read files handed to nobody; and 65530-65533
# lie in the range Debian reserves and never allocates (65000-65533), above systemd's dynamic users
# (61184-65519), so no host account shares them. Why not root: a process escaping its container as
# one of these owns nothing on the host but the files handed to it.
GATEWAY_UID = 65530
APP_UID = 65531
ENGINE_UID = 65532     # our own engines (the llama.cpp launcher, the templated test engine)
TRAINER_UID = 65533
ACCOUNTS = {"appliance-gateway": GATEWAY_UID, "appliance-app": APP_UID, "appliance-engine": ENGINE_UID,
            "appliance-trainer": TRAINER_UID}

_PASSWD = ("root:x:0:0:root:/root:/sbin/nologin\n"
           + "".join(f"{name}:x:{uid}:{uid}:{name}:/nonexistent:/sbin/nologin\n" for name, uid in ACCOUNTS.items())
           + "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")
_GROUP = "root:x:0:\n" + "".join(f"{name}:x:{uid}:\n" for name, uid in ACCOUNTS.items()) + "nogroup:x:65534:\n"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def write_context(fileobj) -> dict:
    """Write the build context (Dockerfile + rootfs) as a tar stream into ``fileobj``.

    Files are read from their host paths (symlinks resolved), never copied to a staging
    directory. Returns a summary (file count, bytes).
    """
    exe = interpreter()
    files = [(exe, "usr/local/bin/python3")] + _stdlib_files()
    dyn = _dynload_files()
    files += dyn
    for lib in shared_libraries([exe] + [p for p, _ in dyn]):
        files.append((Path(os.path.realpath(lib)), lib.lstrip("/")))
    seen: set[str] = set()
    total = 0
    with tarfile.open(fileobj=fileobj, mode="w|") as tar:
        _add_bytes(tar, "Dockerfile", _DOCKERFILE.format(version=python_version(), home=PYTHONHOME).encode())
        _add_dir(tar, "tmp", 0o1777)
        _add_dir(tar, "app")
        _add_bytes(tar, "etc/passwd", _PASSWD.encode())
        _add_bytes(tar, "etc/group", _GROUP.encode())
        for path, arc in files:
            if arc in seen:
                continue
            seen.add(arc)
            info = tar.gettarinfo(str(path), arcname=arc)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isdir():
                continue
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
            total += info.size
        link = tarfile.TarInfo("usr/local/bin/python")
        link.type = tarfile.SYMTYPE
        link.linkname = "python3"
        tar.addfile(link)
    return {"files": len(seen), "bytes": total}
