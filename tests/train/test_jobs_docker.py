"""Fine-tuning on the REAL Docker engine with the demo stack (issue 9's Must-show).

One demo stack per module (``appliance init --demo --yes --models demo-chat,demo-embed`` on the
templated test engine, its catalog overlay in the stack's data dir: own instance, data dir and
free ports), driven through the CLI as a user would; everything of the instance is purged
afterwards. The demo trainer (a test fixture from the same overlay) really trains a tiny model
and writes real checkpoint files.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.stack_support import REPO, DemoStack, run_cli, wait_for
from tests.train.conftest import CHAT, write_jsonl

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    st = DemoStack(tmp_path_factory.mktemp("train-stack"), "tt", ports_in_env=False)
    try:
        res = st.init_demo("-q")
        assert res.returncode == 0, res.stderr[-3000:]
        dataset = write_jsonl(st.root / "faq.jsonl", CHAT * 4)
        yield {"instance": st.instance, "data": st.data_dir, "env": st.env, "gateway": st.gateway_port,
               "dataset": dataset, "root": st.root, "jobs": {}, "stack": st}
    finally:
        st.purge()


@pytest.fixture
def in_stack(stack, monkeypatch):
    """Library calls in this process act on the stack's instance."""
    stack["stack"].use_in_process(monkeypatch)
    return stack


def cli(stack, *args, timeout=300):
    return run_cli(*args, env=stack["env"], timeout=timeout)


def submit(stack, *extra, dataset=None) -> dict:
    res = cli(stack, "train", "submit", "--model", "demo-chat", "--dataset", str(dataset or stack["dataset"]),
              "--json", "-q", *extra)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["started"] is True
    return out["job"]


def status(stack, job_id) -> dict:
    res = cli(stack, "train", "status", job_id, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def record(stack, job_id) -> dict:
    """The job's record as stored (read without refreshing it from the container)."""
    import sqlite3

    conn = sqlite3.connect(stack["data"] / "state.db")
    try:
        row = conn.execute("SELECT job_json FROM train_jobs WHERE id=?", (job_id,)).fetchone()
    finally:
        conn.close()
    return json.loads(row[0])


def job_containers(stack, job_id):
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        return d.list_containers(L.instance_filter(stack["instance"]) + [f"appliance.job={job_id}"])


def stack_containers(stack) -> dict[str, str]:
    from appliance.runtime import labels as L
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        return {c.service: c.id for c in d.list_containers(L.instance_filter(stack["instance"])) if c.service}


def http(url, body=None, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def safetensors_header(path: Path) -> dict:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert len(data) == 8 + size + end
    return header


def test_lora_job_runs_reports_progress_completes_and_is_registered(stack):
    job = submit(stack, "--demo-step-delay", "0.3")
    jid = job["id"]
    assert job["status"] == "running" and job["recipe"] == "lora-cpu-demo"
    [c] = job_containers(stack, jid)
    assert c.labels["appliance.managed"] == "true" and c.labels["appliance.instance"] == stack["instance"]
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        info = d.inspect_container(c.id)
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/data/dataset.jsonl"]["RW"] is False and mounts["/output"]["RW"] is True
    assert info["HostConfig"]["NetworkMode"] == "none" and info["HostConfig"]["Privileged"] is False

    running = wait_for(lambda: (lambda s: s if s["status"] == "running" and (s["progress"]["step"] or 0) > 0
                                else None)(status(stack, jid)), 60)
    assert running, status(stack, jid)
    p = running["progress"]
    assert p["total_steps"] > p["step"] > 0 and p["loss"] > 0 and p["eta_s"] is not None

    done = wait_for(lambda: (lambda s: s if s["status"] != "running" else None)(status(stack, jid)), 120, 0.5)
    assert done and done["status"] == "completed", done
    assert done["progress"]["step"] == done["progress"]["total_steps"]
    assert done["registered"] and done["finalized_by"] == "cli"
    assert job_containers(stack, jid) == []  # removed once its log was saved

    out = Path(done["output_dir"])
    assert set(done["output_files"]) == {"adapter_model.safetensors", "adapter_config.json", "trainer_state.json"}
    header = safetensors_header(out / "adapter_model.safetensors")
    assert header["base_model.model.lm_head.lora_A.weight"]["shape"][0] == 8  # rank 8
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == done["progress"]["total_steps"]
    losses = [h["loss"] for h in state["log_history"]]
    assert min(losses[-5:]) < losses[0]  # it learned something

    res = cli(stack, "catalog", "list", "models")
    assert res.returncode == 0 and done["output_model"] in res.stdout
    logs = cli(stack, "train", "logs", jid, "--tail", "2")
    assert logs.returncode == 0 and "done:" in logs.stdout
    listed = json.loads(cli(stack, "train", "list", "--json").stdout)
    assert [j["status"] for j in listed if j["id"] == jid] == ["completed"]
    stack["jobs"]["lora"] = done


def test_serve_adds_a_service_reachable_through_the_gateway(stack):
    done = stack["jobs"].get("lora")
    if done is None:
        pytest.fail("the LoRA job of the previous test did not complete")
    before = stack_containers(stack)
    res = cli(stack, "serve", done["id"], "--json", "-q")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    model = done["output_model"]
    assert out["model"] == model and not out["already_served"]
    after = stack_containers(stack)
    assert set(after) - set(before) == {out["service"]}
    assert all(after[name] == cid for name, cid in before.items()), "serve must not touch the other services"

    key = json.loads(cli(stack, "keys", "create", "--name", "trainer-test", "--json").stdout)["key"]
    base = f"http://127.0.0.1:{stack['gateway']}/v1"
    code, models = wait_for(lambda: (lambda r: r if r[0] == 200 and any(m["id"] == model for m in r[1]["data"])
                                     else None)(http(f"{base}/models", key=key)), 10) or http(f"{base}/models", key=key)
    assert code == 200 and model in {m["id"] for m in models["data"]}
    code, answer = http(f"{base}/chat/completions",
                        {"model": model, "messages": [{"role": "user", "content": "hours?"}]}, key)
    assert code == 200, answer
    assert answer["model"] == model and '"hours?"' in answer["choices"][0]["message"]["content"]
    again = json.loads(cli(stack, "serve", model, "--json", "-q").stdout)
    assert again["already_served"] is True


def test_cancel_stops_the_container_and_marks_the_job_cancelled(stack):
    job = submit(stack, "--demo-step-delay", "2")
    jid = job["id"]
    assert wait_for(lambda: [c for c in job_containers(stack, jid) if c.state == "running"], 20)
    live = wait_for(lambda: (lambda r: r if "step=1/" in r.stdout else None)(cli(stack, "train", "logs", jid)), 20)
    assert live and live.returncode == 0  # read from the running container
    res = cli(stack, "train", "cancel", jid)
    assert res.returncode == 0, res.stderr
    assert f"job {jid} cancelled" in res.stdout
    assert job_containers(stack, jid) == []
    s = status(stack, jid)
    assert s["status"] == "cancelled" and not s["registered"] and s["error"] == "cancelled by request"
    again = cli(stack, "train", "cancel", jid)
    assert again.returncode == 2 and "already cancelled" in again.stderr


def test_killing_the_agent_mid_job_keeps_the_job_supervised(stack):
    env = {**os.environ, **stack["env"]}
    argv = [sys.executable, "-m", "appliance", "agent", "--interval", "1", "--metrics-port", "0"]
    log1 = open(stack["root"] / "agent1.log", "w")
    agent = subprocess.Popen(argv, env=env, cwd=str(REPO), stdout=log1, stderr=subprocess.STDOUT)
    try:
        job = submit(stack, "--demo-step-delay", "0.4")
        jid = job["id"]
        # progress in the state now comes from the agent (nothing else refreshes the record)
        seen = wait_for(lambda: (record(stack, jid)["progress"]["step"] or 0) > 0, 30)
        assert seen, record(stack, jid)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        mid = record(stack, jid)
        assert mid["status"] == "running" and mid["progress"]["step"] < mid["progress"]["total_steps"]
        assert [c.state for c in job_containers(stack, jid)] == ["running"]

        log2 = open(stack["root"] / "agent2.log", "w")
        agent = subprocess.Popen(argv, env=env, cwd=str(REPO), stdout=log2, stderr=subprocess.STDOUT)
        end = wait_for(lambda: (lambda r: r if r["status"] != "running" else None)(record(stack, jid)), 90, 0.5)
        assert end and end["status"] == "completed", (end, (stack["root"] / "agent2.log").read_text()[-2000:])
        assert end["finalized_by"] == "agent" and end["registered"]
        assert end["progress"]["step"] == end["progress"]["total_steps"]
        assert wait_for(lambda: job_containers(stack, jid) == [], 10)
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()


def test_full_fine_tuning_with_wait_writes_full_weights(stack):
    res = cli(stack, "train", "submit", "--model", "demo-chat", "--dataset", str(stack["dataset"]), "--recipe", "full",
              "--wait", "--json")
    assert res.returncode == 0, res.stderr
    job = json.loads(res.stdout)["job"]
    assert job["status"] == "completed" and job["artifact"] == "weights" and job["recipe"] == "full-cpu-demo"
    assert "step=" not in res.stdout and f"{job['id']}: " in res.stderr  # progress went to stderr
    header = safetensors_header(Path(job["output_dir"]) / "model.safetensors")
    assert {"embed_tokens.weight", "lm_head.weight"} <= set(header)
    assert job["output_model"] == f"demo-chat-full-{job['id'][4:]}"


def test_a_failing_trainer_marks_the_job_failed_with_its_last_lines(stack):
    """Valid records whose answers hold no words: the trainer has nothing to learn and exits 2."""
    bad = write_jsonl(stack["root"] / "punct.jsonl", [
        {"messages": [{"role": "user", "content": "?"}, {"role": "assistant", "content": "..."}]}])
    job = submit(stack, dataset=bad)
    end = wait_for(lambda: (lambda s: s if s["status"] != "running" else None)(status(stack, job["id"])), 60, 0.5)
    assert end and end["status"] == "failed", end
    assert end["exit_code"] == 2 and "no text to learn from" in end["error"] and not end["registered"]


def test_preempted_services_are_restored_when_the_job_ends(in_stack):
    """The restore path on real containers: a job that preempted llm-demo-chat gives it back on cancel."""
    from appliance.runtime.stack import list_services, stop_services
    from appliance.train import store as S
    from appliance.train.models import PreemptedService

    job = submit(in_stack, "--demo-step-delay", "2")
    store = S.open_store()
    stop_services(["llm-demo-chat"], reason=f"preempted by training job {job['id']}")
    with S.job_lock(in_stack["instance"]):
        rec = S.get(store, job["id"])
        rec.preempted = [PreemptedService(name="llm-demo-chat", model="demo-chat", devices=[])]
        S.save(store, rec)
    state = {s.name: s for s in list_services()}
    assert state["llm-demo-chat"].state == "exited" and state["llm-demo-chat"].degraded

    res = cli(in_stack, "train", "cancel", job["id"])
    assert res.returncode == 0, res.stderr
    assert "restored llm-demo-chat" in res.stdout
    state = {s.name: s for s in list_services()}
    assert state["llm-demo-chat"].state == "running" and state["llm-demo-chat"].health == "healthy"
    assert not state["llm-demo-chat"].degraded
    assert status(in_stack, job["id"])["restore"] == "done"
