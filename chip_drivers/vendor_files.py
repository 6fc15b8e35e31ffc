"""Reading vendor install state through a host view: version files, /dev nodes, DRM nodes.

Vendors record their driver and runtime versions the same few ways (a text file holding a
version somewhere in a line, ``key=value`` info files, a JSON file, an install directory
that is a symlink to ``<name>-<version>``, or versioned directories side by side such as
``/opt/rocm-6.2.4``), and expose devices as numbered ``/dev`` nodes or DRM nodes under
the PCI function's ``drm/`` directory (detection layer b). These helpers keep each driver's layer b short and
make every value carry the path it was read from (``acc.sources``/``Runtime.source``).
Everything goes through :class:`~appliance.inventory.hostview.HostView`, so a snapshot
replays exactly what a live node shows.
"""

from __future__ import annotations

import json
import re

from appliance.inventory.hostview import HostView
from appliance.inventory.models import Runtime

VERSION_RE = re.compile(r"(\d+(?:\.\d+)+)")
_DRM_NODE_RE = re.compile(r"^(card\d+|renderD\d+)$")


def version_in_text(text: str | None) -> str | None:
    """The first dotted version number in ``text`` (``Neuware Version 3.9.0`` -> ``3.9.0``)."""
    if not text:
        return None
    m = VERSION_RE.search(text)
    return m.group(1) if m else None


def version_from_file(host: HostView, path: str) -> tuple[str, str] | None:
    """``(version, path)`` from the first version number in a text file, or None."""
    version = version_in_text(host.read_text(path, max_bytes=64 * 1024))
    return (version, path) if version else None


def version_from_files(host: HostView, paths: tuple[str, ...],
                       pattern: re.Pattern = VERSION_RE) -> tuple[str, str] | None:
    """``(version, path)`` from the first of ``paths`` that holds a match of ``pattern``.

    Files after the first hit are not read (a snapshot capture records what detection reads).
    """
    for path in paths:
        m = pattern.search(host.read_text(path, max_bytes=64 * 1024) or "")
        if m:
            return m.group(1), path
    return None


def newest_versioned_dir(host: HostView, parent: str, prefix: str) -> tuple[str, str] | None:
    """``(version, dir)`` of the newest ``<parent>/<prefix>-X.Y[.Z]`` directory (numeric order)."""
    found = []
    for name in host.listdir(parent):
        m = re.fullmatch(rf"{re.escape(prefix)}-(\d+(?:\.\d+)+)", name)
        if m:
            found.append((tuple(int(x) for x in m.group(1).split(".")), m.group(1), f"{parent}/{name}"))
    if not found:
        return None
    _, version, path = max(found)
    return version, path


def key_values(text: str, sep: str = "=") -> dict[str, str]:
    """``key=value`` lines (Ascend ``version.info``, ``ascend_toolkit_install.info``); first one wins."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        key = key.strip()
        if found and key and key not in out:
            out[key] = value.strip()
    return out


def version_from_json(host: HostView, path: str, keys: tuple[str, ...]) -> tuple[str, str] | None:
    """``(version, "path:key.key")`` from a nested JSON value, or None when absent/invalid."""
    text = host.read_text(path, max_bytes=256 * 1024)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if not isinstance(value, (str, int, float)):
        return None
    version = version_in_text(str(value))
    return (version, f"{path}:{'.'.join(keys)}") if version else None


def version_from_link(host: HostView, path: str, prefix: str) -> tuple[str, str] | None:
    """``(version, "readlink path")`` when ``path`` links to ``…/<prefix>-<version>``."""
    target = host.readlink(path)
    if not target:
        return None
    name = target.rstrip("/").rsplit("/", 1)[-1]
    if not name.startswith(prefix + "-"):
        return None
    version = version_in_text(name[len(prefix) + 1:])
    return (version, f"readlink {path}") if version else None


def toolkit_version(host: HostView, home: str, prefix: str, version_file: str,
                    json_keys: tuple[str, ...] | None = None) -> tuple[str, str] | None:
    """``(version, source)`` of a vendor toolkit installed at ``home`` (``/usr/local/corex``):
    its version file (``json_keys`` for a JSON one) first, then the install link
    ``home -> <prefix>-<version>`` that the vendor installers create."""
    path = f"{home}/{version_file}"
    return first_version(version_from_json(host, path, json_keys) if json_keys else version_from_file(host, path),
                         version_from_link(host, home, prefix))


def first_version(*candidates: tuple[str, str] | None) -> tuple[str, str] | None:
    for cand in candidates:
        if cand:
            return cand
    return None


def runtime(name: str, found: tuple[str, str] | None) -> Runtime | None:
    """A :class:`Runtime` from a ``(version, source)`` hit of the functions above, or None."""
    return Runtime(name=name, version=found[0], source=found[1]) if found else None


def numbered_dev_nodes(host: HostView, pattern: str) -> dict[int, str]:
    """``/dev`` nodes whose name matches ``pattern`` (one group: the number) -> {n: path}."""
    rx = re.compile(pattern)
    found: dict[int, str] = {}
    for name in host.listdir("/dev"):
        m = rx.fullmatch(name)
        if m:
            found[int(m.group(1))] = f"/dev/{name}"
    return dict(sorted(found.items()))


def render_nodes(host: HostView) -> list[str]:
    """Every ``/dev/dri/renderD*`` node of the host (ROCm/DTK hosts, when per-device nodes are unknown)."""
    return [f"/dev/dri/{n}" for n in host.listdir("/dev/dri") if n.startswith("renderD")]


def existing(host: HostView, paths: list[str] | tuple[str, ...]) -> list[str]:
    """The subset of ``paths`` present on the host, in order."""
    return [p for p in paths if host.exists(p)]


def drm_nodes(host: HostView, bdf: str) -> list[str]:
    """``/dev/dri/cardN`` and ``/dev/dri/renderDN`` of one PCI function, from its sysfs ``drm/`` dir.

    This is the exact per-device mapping the kernel publishes, so a container gets only the
    DRM nodes of its own devices (never the BMC's ``card0``).
    """
    names = [name for name in host.listdir(f"/sys/bus/pci/devices/{bdf}/drm") if _DRM_NODE_RE.match(name)]
    names.sort(key=lambda n: (not n.startswith("card"), int(n.lstrip("cardenD"))))
    return [f"/dev/dri/{name}" for name in names]
