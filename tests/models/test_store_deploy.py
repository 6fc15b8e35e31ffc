"""`appliance init` and the model store: nothing starts on missing or damaged weights.

The weights step runs before provisioning and before any container: these tests need the Docker
engine only to be reachable (init connects to it first) and create nothing in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.models import modelkit as K
from tests.stack_support import free_port_block, unique_instance
from tests.support import REPO

pytestmark = [pytest.mark.docker]


def init(data, *args):
    """A real (non-dry-run) init on free ports; it must stop at the weights step, before provisioning
    (which the test session's interlock would refuse anyway: APPLIANCE_NO_LIVE_PROVISION)."""
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(data), "APPLIANCE_INSTANCE": unique_instance("tm")}
    ports = ["--gateway-port", str(free_port_block(1)), "--app-port-base", str(free_port_block(3))]
    return subprocess.run([sys.executable, "-m", "appliance", "init", "--yes", *ports, *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_init_refuses_missing_weights_with_the_import_command(tmp_path):
    data = tmp_path / "data"
    K.catalog_overlay(data)
    res = init(data, "--models", K.TINY, "--force")  # --force is for preflight rules, not for weights
    assert res.returncode == 3, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert f"the weights of {K.TINY} (gguf-f16) are not on this node" in last
    assert f"appliance models import <dir>/tiny.gguf --model {K.TINY} --precision gguf-f16" in last
    assert not (data / "ansible").exists(), "provisioning must not have started"


def test_init_refuses_damaged_weights_naming_the_file(tmp_path):
    data = tmp_path / "data"
    K.catalog_overlay(data)
    src = K.gguf_file(tmp_path / "tiny.gguf")
    res = subprocess.run([sys.executable, "-m", "appliance", "models", "import", str(src), "--json"],
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, "APPLIANCE_DATA_DIR": str(data)})
    assert res.returncode == 0, res.stderr
    digest = json.loads(
        (data / "modelstore" / "manifests" / f"{K.TINY}@gguf-f16.json").read_text())["files"][0]["sha256"]
    blob = data / "modelstore" / "blobs" / "sha256" / digest
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as fh:
        fh.seek(-20, 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0x80]))
    res = init(data, "--models", K.TINY, "--force")  # --force never serves damaged (or missing) weights
    assert res.returncode == 3, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert f"the weights of {K.TINY} (gguf-f16) are damaged: tiny.gguf: content changed" in last, last
    assert not (data / "ansible").exists()
