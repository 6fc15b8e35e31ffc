"""Ensure every image a stack needs is present: build local ones, check the others.

Local images (demo engine, gateway, apps, demo trainer) are a directory under ``images/``
copied to ``/app`` on top of the Python runtime base (:mod:`appliance.runtime.pyrt`), run as
``python3 /app/main.py``. Files of a ``common/`` directory beside the build directory
(``images/apps/common/appkit.py``) are copied in beside ``main.py`` too, so the apps share one
copy of their plumbing. Each carries the hash of its files and base
(``appliance.content-hash``) and is **tagged by that hash** (``appliance/gateway:0.1.0-<hash>``,
see :func:`content_tag`): a build is done only when no image has that tag, containers run
exactly the build they were planned with, and two instances (or two appliance versions) on one
engine never re-tag each other's images. Builds of one tag are serialised across processes by a
host-wide lock, so concurrent ``init`` runs build it once. Engine images from the catalog are
never built here -- they must already be present (or be loaded from a bundle, or pulled where a
registry is reachable) -- except a catalog *recipe*: a vendor base without the engine, on which
the engine's wheels from :func:`wheels_dir` are installed with ``pip --no-index``.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator, NamedTuple

from appliance.errors import RuntimeFailure
from appliance.paths import images_dir
from appliance.runtime import labels as L
from appliance.runtime import pyrt
from appliance.runtime.models import Change

# Local image repository -> images/ subdirectory (apps: appliance/app-<name> -> apps/<name>).
LOCAL_BUILDS = {
    "appliance/demo-engine": "demo/engine",
    "appliance/gateway": "gateway",
    "appliance/demo-trainer": "demo/trainer",
}
_SKIP_NAMES = {"__pycache__", ".pytest_cache", "tests", ".git", "Dockerfile"}
SHARED_DIR = "common"  # images/<group>/common/: copied into every build of <group> (apps/common -> each app)

_SERVICE_DOCKERFILE = """\
FROM {base}
COPY app/ /app/
{carried}WORKDIR /app
ENTRYPOINT ["python3", "/app/main.py"]
"""
_CARRIED_LINES = """\
COPY root/ /
ENV PYTHONPATH=/app/site-packages
"""
# A build directory's list of installed Python distributions its image carries (one per line):
# the host's own installed files (this interpreter's builds, like the pyrt base) go to
# /app/site-packages, with the shared libraries their extension modules link.
PACKAGES_FILE = "packages.txt"
HASH_LAYOUT = "svc/2"


def normalize_build(build: str | None) -> str | None:
    """A catalog ``build`` value ("images/demo/engine" or "demo/engine") as an images/ subdirectory."""
    if not build:
        return None
    build = build.strip().strip("/")
    return build[len("images/"):] if build.startswith("images/") else build


def catalog_builds(catalog) -> dict[str, str]:
    """image reference -> images/ subdirectory, for every locally built image the catalog names."""
    out: dict[str, str] = {}
    if catalog is None:
        return out
    for engine in catalog.engines.values():
        for img in engine.images:  # an image's own build (the llama.cpp image) before the engine's
            build = img.build or engine.build
            if build:
                out[img.image] = normalize_build(build)
    for app in catalog.apps.values():
        if app.build:
            out[app.image] = normalize_build(app.build)
    gw = catalog.platform.gateway
    if gw.build:
        out[gw.image] = normalize_build(gw.build)
    for recipe in catalog.training.values():
        if recipe.build:
            out[recipe.image] = normalize_build(recipe.build)
    return out


def build_dir_for(image: str, catalog=None) -> str | None:
    """The images/ subdirectory a local image is built from, or None for external images."""
    hit = catalog_builds(catalog).get(image) if catalog is not None else None
    if hit:
        return hit
    repo = image.rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image
    if repo in LOCAL_BUILDS:
        return LOCAL_BUILDS[repo]
    if repo.startswith("appliance/app-"):
        return f"apps/{repo[len('appliance/app-'):]}"
    return None


def _files(directory: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_NAMES)
        for name in sorted(files):
            if name in _SKIP_NAMES or name.endswith((".pyc", ".pyo")):
                continue
            out.append(Path(root) / name)
    return out


def build_sources(build: str) -> list[tuple[Path, str]]:
    """(file, path under /app) of everything an image built from images/``build`` holds: the
    build directory's files, then those of the ``common/`` directory beside it that the build
    does not have itself (why: the three apps share appkit.py, and one copy in the source
    tree cannot drift). Both the content hash and the build context come from this list, so a
    change to a shared file rebuilds every image that carries it."""
    directory = images_dir() / build
    out = [(path, str(path.relative_to(directory))) for path in _files(directory)]
    shared = directory.parent / SHARED_DIR
    if shared.is_dir() and shared.resolve() != directory.resolve():
        own = {arc for _, arc in out}
        out += [(path, arc) for path in _files(shared) if (arc := str(path.relative_to(shared))) not in own]
    return out


def carried_packages(build: str) -> list[str]:
    """The distributions images/``build``/packages.txt names (none without that file)."""
    path = images_dir() / build / PACKAGES_FILE
    if not path.is_file():
        return []
    return [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.split("#", 1)[0].strip()]


def _distribution(name: str, build: str):
    from importlib import metadata

    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise RuntimeFailure(f"the image needs the Python package {name}, which is not installed here",
                             where=f"images/{build}",
                             fix=f"install it with appliance (pip install {name}); it is one of appliance's "
                                 "dependencies") from None


_INSTALL_RECORDS = {"REQUESTED", "direct_url.json", "INSTALLER", "RECORD"}


def _install_only(rel: PurePosixPath) -> bool:
    """Files of an installed distribution that say how pip installed it, not what it is
    (and bytecode, which the image does not carry, and entry-point scripts outside site-packages)."""
    parts = rel.parts
    if not parts or parts[0].startswith("..") or "__pycache__" in parts or rel.name.endswith((".pyc", ".pyo")):
        return True
    return len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in _INSTALL_RECORDS


def carried_files(build: str) -> tuple[list[tuple[Path, str]], list[str]]:
    """(file, path under the image's root) of the carried distributions and the shared libraries
    their extension modules link (``ldd``), and one line per distribution for the content hash
    (name, version and its RECORD of file hashes: no 100 MB read on every init)."""
    files: list[tuple[Path, str]] = []
    ident: list[str] = []
    sos: list[Path] = []
    for name in carried_packages(build):
        dist = _distribution(name, build)
        # the RECORD lines of what is carried, sorted: the same wheel installed by another pip run
        # (REQUESTED, direct_url.json, INSTALLER differ; bytecode is not carried) hashes the same
        record = sorted(line for line in (dist.read_text("RECORD") or "").splitlines()
                        if line and not _install_only(PurePosixPath(line.rsplit(",", 2)[0])))
        ident.append(f"{dist.metadata['Name']} {dist.version} "
                     f"{hashlib.sha256(chr(10).join(record).encode()).hexdigest()}")
        for rel in dist.files or []:
            if _install_only(PurePosixPath(rel.as_posix())):
                continue
            host = Path(dist.locate_file(rel))
            if not host.is_file():
                continue
            files.append((host, f"app/site-packages/{rel.as_posix()}"))
            if ".so" in rel.name:
                sos.append(host)
    if sos:
        for lib in pyrt.shared_libraries(sos):
            real = Path(os.path.realpath(lib))
            files.append((real, lib.lstrip("/")))
            st = real.stat()
            ident.append(f"lib {lib} {st.st_size} {st.st_mtime_ns}")
    return files, ident


def content_hash(build: str, base_tag: str) -> str:
    """Hash of the build's files (paths and bytes, shared ones included), the distributions it
    carries (name, version, RECORD) and the base image tag."""
    directory = images_dir() / build
    if not (directory / "main.py").is_file():
        raise RuntimeFailure(f"{directory}/main.py is missing", where=f"images/{build}",
                             fix="reinstall appliance (the image sources ship with it)")
    h = hashlib.sha256(f"{HASH_LAYOUT} {base_tag}\n".encode())
    for path, arc in build_sources(build):
        h.update(arc.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    if carried_packages(build):
        for line in carried_files(build)[1]:
            h.update(line.encode() + b"\n")
    return h.hexdigest()[:16]


def _service_context(build: str, base_tag: str):
    """The build context as a tar in a temporary file (an engine image carries 100+ MB)."""
    carried = carried_files(build)[0] if carried_packages(build) else []
    fh = tempfile.TemporaryFile()
    with tarfile.open(fileobj=fh, mode="w") as tar:
        data = _SERVICE_DOCKERFILE.format(base=base_tag, carried=_CARRIED_LINES if carried else "").encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        seen: set[str] = set()
        for path, arc in [(p, f"app/{a}") for p, a in build_sources(build)] + \
                         [(p, a if a.startswith("app/") else f"root/{a}") for p, a in carried]:
            if arc in seen:
                continue
            seen.add(arc)
            info = tar.gettarinfo(str(path), arcname=arc)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755 if (info.mode & 0o111) else 0o644
            with open(path, "rb") as src:
                tar.addfile(info, src)
    fh.seek(0)
    return fh


def content_tag(image: str, digest: str) -> str:
    """The tag a local build of ``image`` with content hash ``digest`` carries.

    ``appliance/demo-engine:0.1.0`` + ``3f9c...`` -> ``appliance/demo-engine:0.1.0-3f9c...`` (the
    catalog's tag stays readable in front; Docker allows 128 characters per tag).
    """
    last = image.rsplit("/", 1)[-1]
    repo, tag = (image.rsplit(":", 1) if ":" in last else (image, "latest"))
    return f"{repo}:{tag}-{digest}"


def lock_dir() -> Path:
    """Host-wide (not per data dir): instances with different data dirs share one engine."""
    return Path(os.environ.get("APPLIANCE_LOCK_DIR") or tempfile.gettempdir()) / "appliance-locks"


@contextmanager
def build_lock(tag: str) -> Iterator[None]:
    """Serialise builds of one tag across processes (flock on a file named by the tag's hash)."""
    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"image-{hashlib.sha256(tag.encode()).hexdigest()[:24]}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---- recipe builds: a vendor base + wheels carried offline ----------------------------------
_RECIPE_DOCKERFILE = """\
FROM {base}
COPY wheels/ /tmp/appliance-wheels/
RUN ["{python}", "-m", "pip", "install", "--no-index", "--no-cache-dir", \
     "--find-links", "/tmp/appliance-wheels", {specs}]
"""


RECIPE_HASH_LABEL = "appliance.recipe-hash"


def wheels_dir() -> Path:
    """Where carried wheels live on the node (a bundle's ``wheels/`` is unpacked here)."""
    from appliance.paths import data_dir

    return data_dir() / "wheels"


def carry_wheels(source: Path, directory: Path | None = None) -> list[str]:
    """Put a staged bundle's wheels where recipe builds find them (linked when on the same file
    system, else copied; each placed atomically). Returns the wheel names placed."""
    import shutil

    if not source.is_dir():
        return []
    dest = directory or wheels_dir()
    dest.mkdir(parents=True, exist_ok=True)
    placed = []
    for wheel in sorted(source.glob("*.whl")):
        target = dest / wheel.name
        placed.append(wheel.name)
        if target.exists() and os.path.samefile(wheel, target):
            continue  # already this file (rename() between two links of one file would do nothing)
        tmp = dest / f".{wheel.name}.partial"
        tmp.unlink(missing_ok=True)
        try:
            os.link(wheel, tmp)
        except OSError:
            shutil.copyfile(wheel, tmp)
        os.replace(tmp, target)
    return placed


def _dist_name(spec: str) -> str:
    import re

    return re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0].strip().lower().replace("-", "_")


def recipe_wheels(recipe, directory: Path | None = None) -> list[Path]:
    """The wheel files in ``directory`` (default :func:`wheels_dir`) for the recipe's requirements;
    a requirement with no wheel is one clear error naming it (the build would fail offline)."""
    root = directory or wheels_dir()
    files = sorted(root.glob("*.whl")) if root.is_dir() else []
    by_name: dict[str, list[Path]] = {}
    for f in files:
        by_name.setdefault(f.name.split("-", 1)[0].lower().replace("-", "_"), []).append(f)
    missing = [spec for spec in recipe.wheels if _dist_name(spec) not in by_name]
    if missing:
        raise RuntimeFailure(f"{recipe.tag} needs wheels that are not carried: {', '.join(missing)}",
                             where=str(root), fix="put the wheels (and their dependencies) in this directory, "
                             "e.g. from the vendor's offline package or a bundle, then re-run")
    return files


def write_recipe_context(fh, recipe, wheels: list[Path]) -> None:
    """A tar build context: the Dockerfile and every carried wheel (pip resolves among them)."""
    import json

    specs = ", ".join(json.dumps(s) for s in recipe.wheels)
    docker_file = _RECIPE_DOCKERFILE.format(base=recipe.base, python=recipe.python, specs=specs).encode()
    with tarfile.open(fileobj=fh, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(docker_file)
        tar.addfile(info, io.BytesIO(docker_file))
        for w in wheels:
            tar.add(str(w), arcname=f"wheels/{w.name}")


class Ensured(NamedTuple):
    """An image made present: the reference containers run, and its content hash (local builds)."""

    ref: str
    content_hash: str | None


class ImageEnsurer:
    """Plans and performs the image work of one ``init`` (dry-run safe)."""

    def __init__(self, docker, *, dry_run: bool = False, progress=None):
        self.docker = docker
        self.dry_run = dry_run
        self.progress = progress or (lambda msg: None)
        self.changes: list[Change] = []
        self._base_tag: str | None = None
        self.build_s = 0.0

    def base_tag(self) -> str:
        """The pyrt tag for this host; built when absent."""
        if self._base_tag:
            return self._base_tag
        tag = pyrt.image_tag()
        if self.docker.image_labels(tag) is None:
            self.changes.append(Change(action="build-image", target=tag,
                                       detail=f"Python {pyrt.python_version()} runtime from the host interpreter"))
            if not self.dry_run:
                with build_lock(tag):
                    if self.docker.image_labels(tag) is None:  # another process may have built it meanwhile
                        start = time.monotonic()
                        self.progress(f"building {tag} (the host's Python as a scratch image)")
                        with tempfile.TemporaryFile() as fh:
                            pyrt.write_context(fh)
                            fh.seek(0)
                            self.docker.build_image(fh, tag, {L.MANAGED: "true", "appliance.image": "pyrt",
                                                              "appliance.python": pyrt.python_version()})
                        self.build_s += time.monotonic() - start
        self._base_tag = tag
        return tag

    def ensure(self, image: str, build: str | None, recipe=None) -> Ensured:
        """Make ``image`` present: a local build from images/``build`` under its content tag, a
        recipe build on a vendor base, or an external engine image as it is named. Returns what
        containers must run."""
        if recipe is not None:
            return self._ensure_recipe(recipe)
        if build is None:
            self._ensure_external(image)
            return Ensured(image, None)
        base = self.base_tag()
        want = content_hash(build, base)
        named = self.docker.image_labels(image)
        if named is not None and named.get(L.CONTENT_HASH) == want:
            # the catalog's name already holds this exact build (an image a bundle loaded with
            # its own tag, FROM this build): run it as named
            return Ensured(image, want)
        ref = content_tag(image, want)
        if self.docker.image_labels(ref) is not None:
            return Ensured(ref, want)
        self.changes.append(Change(action="build-image", target=ref, detail=f"from images/{build}"))
        if not self.dry_run:
            with build_lock(ref):
                if self.docker.image_labels(ref) is None:
                    start = time.monotonic()
                    self.progress(f"building {ref} from images/{build}")
                    with _service_context(build, base) as context:
                        self.docker.build_image(context, ref,
                                                {L.MANAGED: "true", L.CONTENT_HASH: want, "appliance.base": base,
                                                 "appliance.image": build, "appliance.family": image})
                    self.build_s += time.monotonic() - start
        return Ensured(ref, want)

    def _ensure_recipe(self, recipe) -> Ensured:
        """A serving image layered on a vendor base that lacks the engine: the base must be on the
        node (a bundle loads it) and the wheels in :func:`wheels_dir`; pip installs them with
        ``--no-index`` (no registry, no internet). The built image carries the recipe's hash: a
        changed recipe under the same tag is built again; an image under that tag without the label
        (a bundle shipped it prebuilt) is taken as it is."""
        want = hashlib.sha256(recipe.model_dump_json().encode()).hexdigest()[:16]
        have = self.docker.image_labels(recipe.tag)
        if have is not None and have.get(RECIPE_HASH_LABEL, want) == want:
            return Ensured(recipe.tag, None)
        if self.docker.image_labels(recipe.base) is None:
            raise RuntimeFailure(f"the base image {recipe.base} of {recipe.tag} is not on this node",
                                 where=f"image {recipe.tag}",
                                 fix="load it from an offline bundle (appliance init --bundle FILE) "
                                     "or `docker load` it")
        wheels = recipe_wheels(recipe)
        self.changes.append(Change(action="build-image", target=recipe.tag,
                                   detail=f"{recipe.base} + {', '.join(recipe.wheels)} "
                                          f"from {len(wheels)} carried wheel(s)"))
        if not self.dry_run:
            with build_lock(recipe.tag):
                current = self.docker.image_labels(recipe.tag)
                if current is None or current.get(RECIPE_HASH_LABEL, want) != want:
                    start = time.monotonic()
                    self.progress(f"building {recipe.tag} on {recipe.base} (wheels: {', '.join(recipe.wheels)})")
                    with tempfile.TemporaryFile() as fh:
                        write_recipe_context(fh, recipe, wheels)
                        fh.seek(0)
                        self.docker.build_image(fh, recipe.tag, {L.MANAGED: "true", "appliance.image": "recipe",
                                                                 "appliance.base": recipe.base,
                                                                 RECIPE_HASH_LABEL: want})
                    self.build_s += time.monotonic() - start
        return Ensured(recipe.tag, None)

    def _ensure_external(self, image: str) -> None:
        """Engine images: present, else pulled where a registry answers (never on
        ``APPLIANCE_NO_PULL=1``), else an error saying how to load them offline."""
        if self.docker.image_labels(image) is not None:
            return
        offline_fix = "load it from an offline bundle (appliance init --bundle FILE) or `docker load` it first"
        if os.environ.get("APPLIANCE_NO_PULL") == "1":
            raise RuntimeFailure(f"image {image} is not on this node (pulling is off: APPLIANCE_NO_PULL=1)",
                                 where=f"image {image}", fix=offline_fix)
        self.changes.append(Change(action="pull-image", target=image, detail="absent here: pulled from its registry"))
        if self.dry_run:
            return
        start = time.monotonic()
        self.progress(f"pulling {image}")
        try:
            self.docker.pull_image(image, self.progress)
        except RuntimeFailure as exc:
            raise RuntimeFailure(f"image {image} is not on this node and could not be pulled ({exc.message})",
                                 where=f"image {image}", fix=offline_fix) from None
        self.build_s += time.monotonic() - start
