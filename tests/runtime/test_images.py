"""Image handling: local builds only when their sources change; engine images never built."""

from __future__ import annotations

import shutil
import tarfile
import uuid

import pytest

from appliance.errors import RuntimeFailure
from appliance.runtime import images as I
from appliance.runtime import pyrt

pytestmark = [pytest.mark.docker]


def test_build_dirs_come_from_the_catalog_and_the_naming_convention():
    from appliance.catalog import load_catalog

    cat = load_catalog()
    assert I.build_dir_for("appliance/demo-engine:0.1.0", cat) == "demo/engine"
    assert I.build_dir_for("appliance/gateway:0.1.0", cat) == "gateway"
    assert I.build_dir_for("appliance/app-knowledge-base:0.1.0", cat) == "apps/knowledge-base"
    assert I.build_dir_for("vllm/vllm-openai:v0.11.0", cat) is None
    assert I.normalize_build("images/demo/engine") == "demo/engine"


def test_content_hash_follows_the_sources(tmp_path, monkeypatch):
    src = tmp_path / "res" / "images" / "svc"
    src.mkdir(parents=True)
    (src / "main.py").write_text("print('v1')\n")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.pyc").write_bytes(b"junk")
    monkeypatch.setenv("APPLIANCE_RESOURCES", str(tmp_path / "res"))
    first = I.content_hash("svc", "base:1")
    (src / "__pycache__" / "x.pyc").write_bytes(b"other junk")       # caches do not count
    assert I.content_hash("svc", "base:1") == first
    assert I.content_hash("svc", "base:2") != first                  # a new base rebuilds
    (src / "main.py").write_text("print('v2')\n")
    assert I.content_hash("svc", "base:1") != first
    with pytest.raises(RuntimeFailure, match="main.py is missing"):
        I.content_hash("nothing-here", "base:1")


def test_shared_files_beside_a_build_are_in_its_image_and_its_hash(tmp_path, monkeypatch):
    apps = tmp_path / "res" / "images" / "apps"
    for name in ("one", "two"):
        (apps / name).mkdir(parents=True)
        (apps / name / "main.py").write_text(f"import kit  # {name}\n")
    (apps / "common").mkdir()
    (apps / "common" / "kit.py").write_text("V = 1\n")
    monkeypatch.setenv("APPLIANCE_RESOURCES", str(tmp_path / "res"))
    assert [arc for _, arc in I.build_sources("apps/one")] == ["main.py", "kit.py"]
    first = {name: I.content_hash(f"apps/{name}", "base:1") for name in ("one", "two")}
    (apps / "common" / "kit.py").write_text("V = 2\n")                # a shared change rebuilds every app
    assert all(I.content_hash(f"apps/{n}", "base:1") != h for n, h in first.items())
    (apps / "two" / "kit.py").write_text("V = 'own'\n")               # a build's own file wins
    assert dict((arc, p) for p, arc in I.build_sources("apps/two"))["kit.py"] == apps / "two" / "kit.py"
    with tarfile.open(fileobj=I._service_context("apps/one", "base:1")) as tar:
        assert tar.extractfile("kit.py").read() == b"V = 2\n" and "main.py" in tar.getnames()


def test_local_image_is_built_once_and_rebuilt_when_sources_change(tmp_path, monkeypatch, docker):
    res = tmp_path / "res"
    shutil.copytree(I.images_dir() / "demo" / "engine", res / "images" / "svc")
    monkeypatch.setenv("APPLIANCE_RESOURCES", str(res))
    tag = f"appliance/test-img-{uuid.uuid4().hex[:8]}:0.1.0"
    try:
        ens = I.ImageEnsurer(docker)
        h1 = ens.ensure(tag, "svc")
        assert [c.action for c in ens.changes if c.target == tag] == ["build-image"]
        labels = docker.image_labels(tag)
        assert labels["appliance.content-hash"] == h1 and labels["appliance.base"] == pyrt.image_tag()
        again = I.ImageEnsurer(docker)
        assert again.ensure(tag, "svc") == h1 and again.changes == []          # nothing to do
        (res / "images" / "svc" / "main.py").write_text((res / "images" / "svc" / "main.py").read_text() + "\n# v2\n")
        third = I.ImageEnsurer(docker, dry_run=True)
        h2 = third.ensure(tag, "svc")
        assert h2 != h1 and third.changes[0].detail.endswith("(its sources changed)")
        assert docker.image_labels(tag)["appliance.content-hash"] == h1        # dry run built nothing
    finally:
        docker.remove_image(tag)


def test_missing_engine_image_is_pulled_or_explained(docker, monkeypatch):
    ref = f"appliance-test-nonexistent/engine-{uuid.uuid4().hex[:8]}:1"
    with pytest.raises(RuntimeFailure) as err:
        I.ImageEnsurer(docker).ensure(ref, None)
    assert "could not be pulled" in err.value.message and "--bundle" in err.value.fix
    monkeypatch.setenv("APPLIANCE_NO_PULL", "1")
    with pytest.raises(RuntimeFailure, match="pulling is off"):
        I.ImageEnsurer(docker).ensure(ref, None)
    dry = I.ImageEnsurer(docker, dry_run=True)
    monkeypatch.delenv("APPLIANCE_NO_PULL")
    dry.ensure(ref, None)
    assert [(c.action, c.target) for c in dry.changes] == [("pull-image", ref)]
