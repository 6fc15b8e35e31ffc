"""Reading vendor install state through a host view: version files, /dev nodes, DRM nodes.

Several vendors record their runtime version the same few ways (a text file holding a
version somewhere in a line, a JSON file, or an install directory that is a symlink to
``<name>-<version>``), and expose devices as numbered ``/dev`` nodes or DRM nodes under
the PCI function's ``drm/`` directory. These helpers keep each driver's layer b short and
make every value carry the path it was read from (``acc.sources``/``Runtime.source``).
Everything goes through :class:`~appliance.inventory.hostview.HostView`, so a snapshot
replays exactly what a live node shows.
"""

from __future__ import annotations

import json
import re

from appliance.inventory.hostview import HostView

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


def first_version(*candidates: tuple[str, str] | None) -> tuple[str, str] | None:
    for cand in candidates:
        if cand:
            return cand
    return None


def numbered_dev_nodes(host: HostView, pattern: str) -> dict[int, str]:
    """``/dev`` nodes whose name matches ``pattern`` (one group: the number) -> {n: path}."""
    rx = re.compile(pattern)
    found: dict[int, str] = {}
    for name in host.listdir("/dev"):
        m = rx.fullmatch(name)
        if m:
            found[int(m.group(1))] = f"/dev/{name}"
    return dict(sorted(found.items()))


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
