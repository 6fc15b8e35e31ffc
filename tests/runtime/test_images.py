"""Image handling: local builds only when their sources change; engine images never built."""

from __future__ import annotations

import json
import shutil
import tarfile
import uuid

import pytest

from appliance.errors import RuntimeFailure
from appliance.runtime import images as I
from appliance.runtime import pyrt

pytestmark = [pytest.mark.docker]


def test_build_dirs_come_from_the_catalog_and_the_naming_convention():
    from tests.stack_support import templated_catalog

    cat = templated_catalog()  # the templated test engine is in the tests' overlay, not shipped
    assert I.build_dir_for("appliance/demo-engine:0.1.0", cat) == "demo/engine"
    assert I.build_dir_for("appliance/gateway:0.1.0", cat) == "gateway"
    assert I.build_dir_for("appliance/app-knowledge-base:0.1.0", cat) == "apps/knowledge-base"
    assert I.build_dir_for("vllm/vllm-openai:v0.11.0", cat) is None
    # a build set on one engine image (the locally built llama.cpp image; its upstream sibling is pulled)
    assert I.build_dir_for("appliance/llama-cpp:xllamacpp", cat) == "engines/llamacpp"
    assert I.build_dir_for("ghcr.io/ggml-org/llama.cpp:server", cat) is None
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
    with I._service_context("apps/one", "base:1") as fh, tarfile.open(fileobj=fh) as tar:
        assert tar.extractfile("app/kit.py").read() == b"V = 2\n" and "app/main.py" in tar.getnames()
        assert not any(n.startswith("root/") for n in tar.getnames())  # carries no packages


def test_a_build_carries_the_installed_packages_it_names_with_their_libraries(tmp_path, monkeypatch):
    """images/engines/llamacpp carries xllamacpp (llama.cpp's server, a compiled extension): the
    installed files go to /app/site-packages and the shared libraries it links to their paths."""
    from importlib import metadata

    cat = I.carried_packages("engines/llamacpp")
    assert cat == ["xllamacpp"]
    files, ident = I.carried_files("engines/llamacpp")
    arcs = {a for _, a in files}
    assert "app/site-packages/xllamacpp/__init__.py" in arcs
    assert any(a.startswith("app/site-packages/xllamacpp/xllamacpp") and ".so" in a for a in arcs)
    assert any(a.endswith("libstdc++.so.6") for a in arcs) and any(a.endswith("libgomp.so.1") for a in arcs)
    assert ident[0].startswith(f"xllamacpp {metadata.version('xllamacpp')} ")
    # a package that is not installed: one line saying which, and how to get it
    build = tmp_path / "res" / "images" / "engines" / "x"
    build.mkdir(parents=True)
    (build / "main.py").write_text("")
    (build / "packages.txt").write_text("no-such-distribution-here  # needed\n")
    monkeypatch.setenv("APPLIANCE_RESOURCES", str(tmp_path / "res"))
    with pytest.raises(RuntimeFailure, match="needs the Python package no-such-distribution-here"):
        I.content_hash("engines/x", "base:1")


def test_local_image_is_built_once_under_its_content_tag(tmp_path, monkeypatch, docker):
    res = tmp_path / "res"
    shutil.copytree(I.images_dir() / "demo" / "engine", res / "images" / "svc")
    monkeypatch.setenv("APPLIANCE_RESOURCES", str(res))
    tag = f"appliance/test-img-{uuid.uuid4().hex[:8]}:0.1.0"
    built = []
    try:
        ens = I.ImageEnsurer(docker)
        first = ens.ensure(tag, "svc")
        built.append(first.ref)
        assert first.ref == I.content_tag(tag, first.content_hash) == f"{tag}-{first.content_hash}"
        assert [c.action for c in ens.changes if c.target == first.ref] == ["build-image"]
        labels = docker.image_labels(first.ref)
        assert labels["appliance.content-hash"] == first.content_hash and labels["appliance.base"] == pyrt.image_tag()
        assert docker.image_labels(tag) is None                               # no floating tag
        again = I.ImageEnsurer(docker)
        assert again.ensure(tag, "svc") == first and again.changes == []       # nothing to do
        (res / "images" / "svc" / "main.py").write_text((res / "images" / "svc" / "main.py").read_text() + "\n# v2\n")
        third = I.ImageEnsurer(docker, dry_run=True)
        second = third.ensure(tag, "svc")
        assert second.content_hash != first.content_hash and third.changes[0].target == second.ref
        assert docker.image_labels(second.ref) is None                        # dry run built nothing
        assert docker.image_labels(first.ref)["appliance.content-hash"] == first.content_hash
    finally:
        for ref in built:
            docker.remove_image(ref)


def test_two_instances_side_by_side_keep_their_own_images(tmp_path):
    """Two instances whose sources differ (another appliance version's resources, here a changed
    app) installed at the same time on one engine: each runs its own build under its own content
    tag, a re-run of either changes nothing, and no untagged image is left behind. Before, both
    re-tagged ``appliance/app-customer-service:0.1.0`` under each other, so each re-run rebuilt
    and replaced the other's app, and every rebuild left the previous image untagged."""
    import subprocess

    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker
    from tests.stack_support import REPO, TEMPLATED_MODELS, DemoStack

    res_b = tmp_path / "resources-b"
    for sub in ("images", "playbooks"):
        shutil.copytree(REPO / sub, res_b / sub, symlinks=True)
    app = res_b / "images" / "apps" / "customer-service" / "main.py"
    app.write_text(app.read_text() + "\n# resources of another appliance version\n")
    a = DemoStack(tmp_path / "a", "ia", ports_in_env=False)
    b = DemoStack(tmp_path / "b", "ib", ports_in_env=False)
    b.env["APPLIANCE_RESOURCES"] = str(res_b)

    def start(stack):
        import os
        import sys
        args = [sys.executable, "-m", "appliance", "init", "--demo", "--yes", "-q", "--json",
                "--models", TEMPLATED_MODELS,  # the templated test engine (its overlay: DemoStack)
                "--gateway-port", str(stack.gateway_port), "--app-port-base", str(stack.app_port_base)]
        return subprocess.Popen(args, env={**os.environ, **stack.env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def images_of(stack, d) -> dict[str, str]:
        return {c.service: d.client.api.inspect_container(c.id)["Image"]
                for c in d.list_containers(L.instance_filter(stack.instance))}

    try:
        procs = [start(a), start(b)]  # at the same time
        for p in procs:
            out, err = p.communicate(timeout=900)
            assert p.returncode == 0, err[-3000:]
        with Docker() as d:
            ia, ib = images_of(a, d), images_of(b, d)
            assert ia["customer-service"] != ib["customer-service"]
            assert {k: v for k, v in ia.items() if k != "customer-service"} == \
                   {k: v for k, v in ib.items() if k != "customer-service"}     # same sources, one build
            tags = {c.service: c.image for c in d.list_containers(L.instance_filter(a.instance))}
            assert all("-" in t.rsplit(":", 1)[1] for t in tags.values()), tags   # content tags
        for stack in (a, b):  # a re-run of either keeps everything
            rerun = stack.cli("init", "--yes", "--json", "-q")
            assert rerun.returncode == 0, rerun.stderr[-3000:]
            changes = [c for c in json.loads(rerun.stdout)["changes"] if c["action"] != "keep"]
            assert changes == [], changes
        with Docker() as d:
            assert images_of(a, d) == ia and images_of(b, d) == ib
            dangling = d.list_images([f"{L.MANAGED}=true"], dangling=True)
            assert dangling == [], dangling
    finally:
        a.purge()
        b.purge()


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


def _probe_wheel(directory, name: str = "appliance_recipe_probe", version: str = "1.0") -> None:
    """A minimal pure-Python wheel built here (no network): one module that prints a marker."""
    import base64
    import hashlib
    import zipfile

    files = {f"{name}.py": b"MARKER = 'served by the layered engine'\n",
             f"{name}-{version}.dist-info/METADATA":
                 f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  b"Tag: py3-none-any\n"}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)


def test_a_recipe_layers_carried_wheels_on_a_vendor_base_offline(tmp_path, monkeypatch, docker):
    """A catalog image without the engine (serves: false) is built on the node: its base (here
    the pyrt runtime with pip, standing in for a vendor base) plus wheels from the carried wheel
    directory, installed with pip --no-index; a missing wheel or base is one clear error."""
    import io
    import subprocess
    import sys
    from pathlib import Path

    import pip

    from appliance.catalog.schema import ImageRecipe
    from appliance.runtime import labels as L

    suffix = uuid.uuid4().hex[:8]
    base = f"appliance-test/recipe-base-{suffix}:1"
    tag = f"appliance-test/recipe-{suffix}:1"
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    wheels = I.wheels_dir()
    wheels.mkdir(parents=True)
    recipe = ImageRecipe(base=base, wheels=["appliance-recipe-probe==1.0"], tag=tag)
    ens = I.ImageEnsurer(docker)
    with pytest.raises(RuntimeFailure, match=f"base image {base}"):
        ens.ensure(tag, None, recipe)
    built = [base, tag]
    try:
        # the stand-in vendor base: the pyrt runtime with the host's pip in its site-packages
        site = f"/usr/local/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
        fh = io.BytesIO()
        with tarfile.open(fileobj=fh, mode="w") as tar:
            tar.add(str(Path(pip.__file__).parent), arcname="pip",
                    filter=lambda t: None if "__pycache__" in t.name else t)
            text = f"FROM {ens.base_tag()}\nCOPY pip/ {site}/pip/\n".encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
        fh.seek(0)
        docker.build_image(fh, base, {L.MANAGED: "true", "appliance.test": "recipe"})
        with pytest.raises(RuntimeFailure, match="not carried: appliance-recipe-probe==1.0"):
            I.ImageEnsurer(docker).ensure(tag, None, recipe)
        _probe_wheel(wheels)
        dry = I.ImageEnsurer(docker, dry_run=True)
        assert dry.ensure(tag, None, recipe).ref == tag and [c.action for c in dry.changes] == ["build-image"]
        assert docker.image_labels(tag) is None
        first = I.ImageEnsurer(docker)
        assert first.ensure(tag, None, recipe).ref == tag
        assert docker.image_labels(tag)["appliance.base"] == base
        out = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", tag, "-c",
                              "import appliance_recipe_probe as m; print(m.MARKER)"],
                             capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == "served by the layered engine", out.stderr
        again = I.ImageEnsurer(docker)
        assert again.ensure(tag, None, recipe).ref == tag and again.changes == []    # built once
        changed = recipe.model_copy(update={"wheels": ["appliance-recipe-probe>=1.0"]})  # same tag, new recipe
        rebuild = I.ImageEnsurer(docker)
        assert rebuild.ensure(tag, None, changed).ref == tag and [c.action for c in rebuild.changes] == ["build-image"]
        settled = I.ImageEnsurer(docker)
        assert settled.ensure(tag, None, changed).ref == tag and settled.changes == []
    finally:
        for ref in reversed(built):
            docker.remove_image(ref)
