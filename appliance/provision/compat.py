"""What each chip's driver and container runtime must be: the compatibility matrix for the host.

Two sources, one function (:func:`requirements`):

- the catalog (``appliance.catalog.compat_for(backend)``): the minimum driver the catalog's
  images need (``driver_min``) and the runtime range (``runtime``) for each backend family;
- provisioning's own table below, for host-side container runtime packages the catalog does
  not describe (they are about the host, not the images).

The playbooks compare what is installed on each host against these ranges and install from
the offline package directory only where it does not fit. Preflight reads the same function,
so ``appliance preflight`` and ``appliance provision`` never disagree.

Offline package directory layout (documented in ``docs/provisioning.md``)::

    <packages>/<vendor>/<component>/<version>/*.deb | *.rpm | *.run
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_SUFFIXES = (".deb", ".rpm", ".run")

# Host-side minimums the catalog does not carry: (vendor, component) -> minimum version.
# NVIDIA Container Toolkit 1.14 is the first with stable `nvidia-ctk cdi generate`.
HOST_MINIMUMS: dict[tuple[str, str], str] = {
    ("nvidia", "container-toolkit"): "1.14.0",
}


@dataclass
class Requirement:
    """A version range one component must be in (None: unbounded) and where it came from."""

    component: str
    min_version: str | None = None
    max_version: str | None = None
    source: str = ""

    def describe(self) -> str:
        if self.min_version and self.max_version:
            return f">= {self.min_version}, <= {self.max_version}"
        if self.min_version:
            return f">= {self.min_version}"
        if self.max_version:
            return f"<= {self.max_version}"
        return "any version"

    def admits(self, version: str) -> bool:
        from appliance.catalog.versions import in_range

        return in_range(version, self.min_version, self.max_version)


@dataclass
class PackageChoice:
    """The package version picked from the offline directory for one component."""

    vendor: str
    component: str
    search_dir: Path
    version: str | None = None
    files: list[Path] = field(default_factory=list)
    problem: str | None = None


def catalog_compat(backend: str):
    """The catalog's BackendCompat for ``backend`` (None when the catalog has no entry).

    The one place provisioning reads the catalog's matrix; a broken catalog raises its own
    CatalogError (exit 2) rather than silently provisioning without requirements.
    """
    from appliance.catalog import compat_for

    return compat_for(backend)


def requirements(vendor: str) -> dict[str, Requirement]:
    """component -> Requirement for one chip vendor (``driver``, ``runtime``, toolkits)."""
    from chip_drivers import backend_of

    out: dict[str, Requirement] = {}
    compat = catalog_compat(backend_of(vendor))
    if compat is not None:
        if compat.driver_min:
            out["driver"] = Requirement("driver", min_version=compat.driver_min,
                                        source=f"catalog compat.{backend_of(vendor)}.driver_min")
        if compat.runtime.min or compat.runtime.max:
            out["runtime"] = Requirement("runtime", min_version=compat.runtime.min,
                                         max_version=compat.runtime.max,
                                         source=f"catalog compat.{backend_of(vendor)}.runtime "
                                                f"({compat.runtime_name})")
    for (v, component), minimum in HOST_MINIMUMS.items():
        if v == vendor:
            out[component] = Requirement(component, min_version=minimum, source="provisioning defaults")
    return out


def _version_dirs(directory: Path) -> list[tuple[str, list[Path]]]:
    """(version, package files) for each version directory holding .deb/.rpm/.run files."""
    from appliance.catalog.versions import sort_key

    rows = []
    try:
        children = sorted(p for p in directory.iterdir() if p.is_dir())
    except OSError:
        return []
    for child in children:
        files = sorted(p for p in child.iterdir() if p.is_file() and p.name.endswith(PACKAGE_SUFFIXES))
        if files:
            rows.append((child.name, files))
    rows.sort(key=lambda row: sort_key(row[0]), reverse=True)
    return rows


def choose_package(packages_dir: Path | None, vendor: str, component: str,
                   req: Requirement | None) -> PackageChoice:
    """The newest version directory whose version the requirement admits (or why none does)."""
    if packages_dir is None:
        return PackageChoice(vendor, component, Path("<packages>") / vendor / component,
                             problem="no package directory was given (--packages DIR)")
    search = Path(packages_dir) / vendor / component
    choice = PackageChoice(vendor, component, search)
    if not search.is_dir():
        choice.problem = f"{search} does not exist"
        return choice
    rows = _version_dirs(search)
    if not rows:
        choice.problem = f"no <version>/ directory with {'/'.join(PACKAGE_SUFFIXES)} files in {search}"
        return choice
    for version, files in rows:
        if req is None or req.admits(version):
            choice.version, choice.files = version, files
            return choice
    found = ", ".join(v for v, _ in rows)
    choice.problem = f"found {found}, none {req.describe() if req else ''}".strip()
    return choice


def components_extravars(packages_dir: Path | None, vendors: list[str]) -> dict:
    """``appliance_components`` for the playbooks: per vendor and component, the range and package.

    Components with no requirement still get an entry when the package directory has them,
    so a role's required components (e.g. a driver that is not installed at all) find the
    package; components with neither are left to the role's defaults.
    """
    out: dict[str, dict] = {}
    for vendor in vendors:
        reqs = requirements(vendor)
        names = set(reqs)
        if packages_dir is not None and (Path(packages_dir) / vendor).is_dir():
            names |= {p.name for p in (Path(packages_dir) / vendor).iterdir() if p.is_dir()}
        entries = {}
        for name in sorted(names):
            req = reqs.get(name)
            pick = choose_package(packages_dir, vendor, name, req)
            entries[name] = {
                "min_version": req.min_version if req else None,
                "max_version": req.max_version if req else None,
                "range": req.describe() if req else "any version",
                "source": req.source if req else "",
                "package_search_dir": str(pick.search_dir),
                "package_version": pick.version,
                "package_files": [str(p) for p in pick.files],
                "package_problem": pick.problem,
            }
        out[vendor] = entries
    return out
