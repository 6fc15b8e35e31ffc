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
