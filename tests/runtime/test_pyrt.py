"""The Python runtime base image built from the host's interpreter (no registry, no pull)."""

from __future__ import annotations

import io
import tarfile

import pytest

from appliance.runtime import pyrt

pytestmark = [pytest.mark.docker]

PROGRAM = r"""
import json, sqlite3, ssl, http.server, hashlib, socket, threading, urllib.request, zoneinfo
import sys
db = sqlite3.connect(":memory:"); db.execute("create table t(x)"); db.execute("insert into t values (1)")
t = threading.Thread(target=lambda: None); t.start(); t.join()
print(json.dumps({"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
                  "ssl": ssl.OPENSSL_VERSION, "rows": db.execute("select count(*) from t").fetchone()[0]}))
"""


def test_context_is_a_scratch_image_of_the_host_python():
    buf = io.BytesIO()
    summary = pyrt.write_context(buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        names = set(tar.getnames())
        dockerfile = tar.extractfile("Dockerfile").read().decode()
    assert dockerfile.splitlines()[2] == "FROM scratch"
    assert "usr/local/bin/python3" in names
    xy = "python%d.%d" % __import__("sys").version_info[:2]
    assert f"usr/local/lib/{xy}/json/__init__.py" in names
    assert not any(n.startswith(f"usr/local/lib/{xy}/test/") or "/site-packages/" in n for n in names)
    assert any(n.endswith("libgcc_s.so.1") for n in names)   # dlopened by glibc for thread exit
    assert summary["bytes"] < 150 * 1024 * 1024


def test_tag_is_stable_and_names_the_python_version():
    assert pyrt.image_tag() == pyrt.image_tag()
    assert pyrt.image_tag().startswith(f"appliance/pyrt:{pyrt.python_version()}-")


def test_the_image_runs_stdlib_servers_and_threads(docker, instance):
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import ContainerCreate
    from appliance.runtime.images import ImageEnsurer

    tag = ImageEnsurer(docker).base_tag()
    assert docker.image_labels(tag)["appliance.managed"] == "true"
    cid = docker.create_container(ContainerCreate(
        name=f"appliance-{instance}-pyrt-check", image=tag, labels=L.base_labels(instance),
        command=["python3", "-c", PROGRAM], restart="no", read_only=True, cap_drop=["ALL"]))
    docker.start(cid)
    assert docker.wait(cid, 60) == 0, docker.log_tail(cid)
    out = "\n".join(docker.log_tail(cid))
    assert '"rows": 1' in out and pyrt.python_version() in out
    assert "libgcc_s" not in out
