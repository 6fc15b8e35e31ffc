"""The README's main job for real: `appliance init --demo --yes` -- real models on the llama.cpp engine.

One stack per module (its own instance, data dir and free ports), brought up through the CLI
exactly as a new user would, then exercised with the official OpenAI SDK and the apps' APIs
(signed in as the first admin through the one-time link `init` prints: the apps need a session).
Everything of the instance is purged afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.gateway.gwtest import redeem_link
from tests.stack_support import REPO, free_port_block, purge_instance, unique_instance

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-stack")
    inst = unique_instance("tr")
    env = {**os.environ, "APPLIANCE_INSTANCE": inst, "APPLIANCE_DATA_DIR": str(root / "data")}
    gw, apps = free_port_block(1), free_port_block(3)
    engine = os.environ.get("DOCKER_HOST")  # the run's engine: teardown may come after a no-engine test
    try:
        res = subprocess.run([sys.executable, "-m", "appliance", "init", "--demo", "--yes", "--json", "-q",
                              "--gateway-port", str(gw), "--app-port-base", str(apps)],
                             capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
        assert res.returncode == 0, res.stderr[-4000:]
        out = json.loads(res.stdout)
        key = subprocess.run([sys.executable, "-m", "appliance", "keys", "create", "--name", "sdk", "--json"],
                             capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
        assert key.returncode == 0, key.stderr
        assert out.get("login_link"), "init made no sign-in link for the first admin"
        session = redeem_link(out["login_link"])  # the Cookie header value the apps' API calls send
        chat = next(s for s in out["plan"]["services"] if s["role"] == "chat")
        embed = next(s for s in out["plan"]["services"] if s["role"] == "embedding")
        yield SimpleNamespace(instance=inst, env=env, init=out, gateway=f"http://127.0.0.1:{gw}/v1",
                              key=json.loads(key.stdout)["key"], session=session, chat=chat["served_model_name"],
                              embed=embed["served_model_name"],
                              apps={name: url for name, url in out["endpoints"].items() if name != "gateway"})
    finally:
        purge_instance(inst, docker_host=engine)


@pytest.fixture(scope="module")
def client(real_stack):
    from openai import OpenAI

    return OpenAI(base_url=real_stack.gateway, api_key=real_stack.key, timeout=120, max_retries=0)
