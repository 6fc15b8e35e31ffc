"""Fixtures for bundle tests: tiny images built locally (FROM scratch), keys, bundle factories.

Every image carries ``appliance.test=<session label>`` and is removed at the end of the
session; tags are unique per session so concurrent runs never collide.
"""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

SESSION = uuid.uuid4().hex[:8]
TEST_LABEL = "appliance.test"
LABEL_VALUE = f"bundle-{SESSION}"
REPO = f"appliance-bt-{SESSION}"


def _context(files: dict[str, bytes], dockerfile: str) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in [*files.items(), ("Dockerfile", dockerfile.encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _rand(seed: str, size: int) -> bytes:
    import hashlib

    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{SESSION}/{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@pytest.fixture(scope="session")
def docker_engine():
    from appliance.runtime import docker_adapter as da

    try:
        d = da.Docker()
    except Exception as exc:  # the suite's standard is a real engine; say clearly why not
        pytest.fail(f"the Docker engine is required for bundle tests: {exc}")
    yield d
    d.close()


@pytest.fixture(scope="session")
def test_images(docker_engine):
    """engine:1 and engine:2 share a 1 MiB base layer and differ in one small layer;
    tools:1 shares the base with both (a layer shared by several images)."""
    base = _rand("base", 1 << 20)
    built = {}
    specs = {
        f"{REPO}/engine:1": {"v.bin": _rand("v1", 96 * 1024)},
        f"{REPO}/engine:2": {"v.bin": _rand("v2", 128 * 1024)},
        f"{REPO}/tools:1": {"tools.bin": _rand("tools", 64 * 1024)},
    }
    try:
        for ref, extra in specs.items():
            name = next(iter(extra))
            ctx = _context({"base.bin": base, **extra},
                           f"FROM scratch\nCOPY base.bin /base.bin\nCOPY {name} /{name}\n")
            built[ref] = docker_engine.build_image(ctx, ref, {TEST_LABEL: LABEL_VALUE})
        yield SimpleNamespace(engine1=f"{REPO}/engine:1", engine2=f"{REPO}/engine:2", tools=f"{REPO}/tools:1",
                              ids=built)
    finally:
        remove_test_images(docker_engine)


def remove_test_images(docker_engine) -> None:
    for img in docker_engine.list_images([f"{TEST_LABEL}={LABEL_VALUE}"]):
        for tag in img["tags"]:
            docker_engine.remove_image(tag)
        docker_engine.remove_image(img["id"])


@pytest.fixture(scope="session")
def keypair(tmp_path_factory):
    from appliance.bundle.keys import keygen

    d = tmp_path_factory.mktemp("keys")
    return keygen(d, "vendor")


@pytest.fixture(scope="session")
def other_keypair(tmp_path_factory):
    from appliance.bundle.keys import keygen

    d = tmp_path_factory.mktemp("keys-other")
    return keygen(d, "intruder")


@pytest.fixture
def trust(keypair, monkeypatch):
    """Trust the vendor key for this test (through the env override)."""
    monkeypatch.setenv("APPLIANCE_BUNDLE_PUBKEYS", keypair.public_key)
    return keypair


def write_spec(directory: Path, version: str, images: list[str], upgrades_from: list[str] | None = None,
               playbook_text: str = "- hosts: all\n  gather_facts: false\n  tasks: []\n",
               extra: dict | None = None) -> Path:
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    pb = directory / "playbooks"
    pb.mkdir(exist_ok=True)
    (pb / "site.yml").write_text(playbook_text)
    spec = {"version": version, "upgrades_from": upgrades_from or [], "images": images,
            "playbooks": "playbooks", **(extra or {})}
    path = directory / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def spec_writer():
    return write_spec


@pytest.fixture(scope="session")
def bundles(test_images, keypair, tmp_path_factory):
    """Release 1 (full), release 2 (full) and release 2 as a delta against 1."""
    from appliance.bundle.create import create_bundle

    d = tmp_path_factory.mktemp("bundles")
    key = Path(keypair.private_key)
    s1 = write_spec(d / "r1", "1.0.0", [test_images.engine1, test_images.tools])
    s2 = write_spec(d / "r2", "2.0.0", [test_images.engine2, test_images.tools], ["1.0.0"])
    r1 = create_bundle(s1, d / "r1.bundle", key)
    r2 = create_bundle(s2, d / "r2.bundle", key)
    r2d = create_bundle(s2, d / "r2-delta.bundle", key, base=d / "r1.bundle")
    return SimpleNamespace(r1=Path(r1.file), r2=Path(r2.file), r2_delta=Path(r2d.file),
                           reports={"r1": r1, "r2": r2, "r2_delta": r2d}, dir=d)


# ---- tampering helpers --------------------------------------------------------------------------
def members(path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out = []
    with tarfile.open(path, "r:") as tf:
        for m in tf.getmembers():
            out.append((m, tf.extractfile(m).read() if m.isreg() else None))
    return out


def rewrite(src: Path, dst: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x01]))


def copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copyfile(src, dst)
    return dst


@pytest.fixture
def tamper():
    return SimpleNamespace(members=members, rewrite=rewrite, flip_byte=flip_byte, copy=copy)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/bundle" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.docker)


# ---- releases of a real (demo) stack: the templated test engine ------------------------------------
DEMO_BASE = "appliance/demo-engine:0.1.0"  # built from images/demo/engine (tests/fixtures/catalog/templated.yaml)


@pytest.fixture(scope="session")
def release_images(docker_engine):
    """Demo-engine images for releases 1.0.0 and 2.0.0: the runtime's demo engine plus one small
    release layer each (so 2 differs from 1 by one layer and its config)."""
    from appliance.runtime.images import ImageEnsurer

    base = ImageEnsurer(docker_engine).ensure(DEMO_BASE, "demo/engine").ref  # the build's content tag
    refs = {}
    try:
        for version in ("1.0.0", "2.0.0"):
            ref = f"{REPO}/demo-engine:{version}"
            ctx = _context({"release.txt": f"release {version}\n".encode() + _rand(version, 32 * 1024)},
                           f"FROM {base}\nCOPY release.txt /app/release.txt\n")
            docker_engine.build_image(ctx, ref, {TEST_LABEL: LABEL_VALUE})
            refs[version] = ref
        yield refs
    finally:
        for ref in refs.values():
            docker_engine.remove_image(ref)
        remove_test_images(docker_engine)


@pytest.fixture
def release_kit(docker_engine, release_images):
    """Build one more labelled release image (FROM the demo engine) and write release specs."""
    from appliance.runtime.images import ImageEnsurer

    base = ImageEnsurer(docker_engine).ensure(DEMO_BASE, "demo/engine").ref

    def build_engine(version: str, files: dict[str, bytes], target: str) -> str:
        ref = f"{REPO}/demo-engine:{version}"
        name = next(iter(files))
        ctx = _context(files, f"FROM {base}\nCOPY {name} {target}\n")
        docker_engine.build_image(ctx, ref, {TEST_LABEL: LABEL_VALUE})
        return ref

    return SimpleNamespace(build_engine=build_engine, write_spec=write_release_spec)


@pytest.fixture(scope="session")
def node_resources(tmp_path_factory) -> Path:
    """Resources (``APPLIANCE_RESOURCES``) for the node that installs the release bundles: a copy
    of the checkout's whose shipped catalog also holds the templated overlay's file. The node
    plans (``appliance train submit``) with its shipped catalog, which must know ``demo-chat``
    as the bundles' catalogs do; the node's data dir cannot hold the overlay instead (a
    release's catalog is merged with the node's overlay: the same ids twice are an error)."""
    import shutil

    from tests.stack_support import REPO as CHECKOUT
    from tests.stack_support import TEMPLATED_CATALOG

    root = tmp_path_factory.mktemp("node-resources")
    for sub in ("images", "playbooks"):
        shutil.copytree(CHECKOUT / sub, root / sub, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copyfile(TEMPLATED_CATALOG, root / "images" / "catalog" / TEMPLATED_CATALOG.name)
    return root


def write_release_spec(directory: Path, version: str, image: str, upgrades_from: list[str]) -> Path:
    """A bundle spec whose catalog is the shipped one plus the templated test overlay's entries
    (its file copied into the bundle's catalog/), with the templated engine served by ``image``.

    The shipped catalog has no templated engine (a test fixture, tests/fixtures/catalog/), so the
    release carries it as one more catalog file. The node installing these bundles must not
    have the overlay in its own data dir as well (a release's catalog is merged with the node's
    overlay: the same ids twice are an error; see ``node_resources``). The catalog requires the demo engine to keep its
    ``build`` (demo engines are local builds); the release image is built FROM the runtime's demo
    engine and so carries the same content hash label, which tells the runtime it is up to date:
    it runs the bundle's image as is (the tests check the running containers' image ids against
    the bundle's).
    """
    import shutil

    import yaml

    from appliance.paths import images_dir
    from tests.stack_support import TEMPLATED_CATALOG

    spec = write_spec(directory, version, [image], upgrades_from)
    catalog = directory / "catalog"
    shutil.copytree(images_dir() / "catalog", catalog)
    templated = catalog / TEMPLATED_CATALOG.name
    assert not templated.exists(), "the shipped catalog has a file of the overlay's name"
    data = yaml.safe_load(TEMPLATED_CATALOG.read_text())
    demo = data["engines"]["demo-engine"]
    demo["images"] = [{**demo["images"][0], "image": image, "version": version}]
    templated.write_text(yaml.safe_dump(data, sort_keys=False))
    raw = yaml.safe_load(spec.read_text())
    raw["catalog"] = "catalog"
    spec.write_text(yaml.safe_dump(raw))
    return spec


@pytest.fixture(scope="session")
def release_bundles(release_images, keypair, other_keypair, tmp_path_factory):
    """Full bundles of 1.0.0 and 2.0.0, a delta of 2.0.0 against 1.0.0, and small deltas used
    to test the version policy: 0.9.0 (older) and 3.0.0 (upgrades only from 2.0.0)."""
    from appliance.bundle.create import create_bundle

    d = tmp_path_factory.mktemp("release-bundles")
    key = Path(keypair.private_key)
    one = write_release_spec(d / "s1", "1.0.0", release_images["1.0.0"], [])
    two = write_release_spec(d / "s2", "2.0.0", release_images["2.0.0"], ["1.0.0"])
    old = write_release_spec(d / "s09", "0.9.0", release_images["1.0.0"], [])
    three = write_release_spec(d / "s3", "3.0.0", release_images["2.0.0"], ["2.0.0"])
    out = SimpleNamespace(dir=d)
    out.r1 = Path(create_bundle(one, d / "r1.bundle", key).file)
    rep2 = create_bundle(two, d / "r2.bundle", key)
    rep2d = create_bundle(two, d / "r2-delta.bundle", key, base=out.r1)
    out.r2, out.r2_delta = Path(rep2.file), Path(rep2d.file)
    out.reports = {"r2": rep2, "r2_delta": rep2d}
    out.r09 = Path(create_bundle(old, d / "r09.bundle", key, base=out.r1).file)
    out.r3 = Path(create_bundle(three, d / "r3.bundle", key, base=out.r1).file)
    out.r2_untrusted = Path(create_bundle(two, d / "r2-untrusted.bundle", Path(other_keypair.private_key),
                                          base=out.r1).file)
    return out
