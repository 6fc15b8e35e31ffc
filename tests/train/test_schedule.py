"""Scheduling against node snapshots and their serving plans: free devices, contention, preemption.

No containers: ``train submit --snapshot DIR`` plans the job against the plan ``appliance
plan`` makes for that node and starts nothing.
"""

from __future__ import annotations

import json
import time

import pytest

from appliance.errors import NoFitError
from appliance.train.models import Job
from appliance.train.schedule import DevicesBusy, schedule_job
from tests.stack_support import run_cli
from tests.train.conftest import ASCEND8, H200


@pytest.fixture(scope="module")
def h200():
    from appliance.inventory.detect import detect
    from appliance.planner import plan

    inv = detect(snapshot=str(H200), usage=False)
    return inv, plan(inv)


@pytest.fixture(scope="module")
def ascend():
    from appliance.inventory.detect import detect
    from appliance.planner import plan

    inv = detect(snapshot=str(ASCEND8), usage=False)
    return inv, plan(inv)


def _holders(plan) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for s in plan.services:
        for d in s.devices:
            out.setdefault(f"{d.vendor}:{d.index}", set()).add(s.name)
    return out


def test_inference_holding_the_only_gpu_refuses_with_the_reason(h200):
    inv, serving = h200
    holders = _holders(serving)["nvidia:0"]
    assert holders  # the default plan serves on the H200
    with pytest.raises(DevicesBusy) as err:
        schedule_job(inv, "qwen2.5-7b-instruct", "lora", serving=serving, serving_label="test", active_jobs=[])
    msg = err.value.message
    assert "needs 1 device(s) of NVIDIA H200" in msg and "0 of 1 free" in msg
    for name in holders:
        assert name in msg and name in err.value.fix
    assert "--preempt" in err.value.fix and err.value.exit_code == 3


def test_preempt_lists_the_services_that_stop_and_come_back(h200):
    inv, serving = h200
    s = schedule_job(inv, "qwen2.5-7b-instruct", "lora", serving=serving, serving_label="test", active_jobs=[],
                     preempt=True)
    assert [f"{d.vendor}:{d.index}" for d in s.devices] == ["nvidia:0"]
    assert {p.name for p in s.preempt} == _holders(serving)["nvidia:0"]
    assert all(p.devices == ["nvidia:0"] for p in s.preempt)
    assert s.recipe == "lora-cuda" and s.memory.total_mib_per_device <= s.usable_mib_per_device


def test_free_devices_are_used_without_preemption(ascend):
    inv, serving = ascend
    held = _holders(serving)
    s = schedule_job(inv, "qwen2.5-7b-instruct", "full", serving=serving, serving_label="test", active_jobs=[])
    chosen = [f"{d.vendor}:{d.index}" for d in s.devices]
    assert len(chosen) == s.memory.devices and not s.preempt
    assert not set(chosen) & set(held)
    assert s.recipe == "full-cann"


def test_all_eight_npus_refused_then_preempting_the_fewest_services(ascend):
    inv, serving = ascend
    held = _holders(serving)
    with pytest.raises(DevicesBusy) as err:
        schedule_job(inv, "qwen2.5-7b-instruct", "lora", serving=serving, serving_label="test", active_jobs=[],
                     devices=8)
    assert f"{8 - len(held)} of 8 free" in err.value.message
    for dev, names in held.items():
        assert f"{dev} is used by inference service(s) {', '.join(sorted(names))}" in err.value.message
    s = schedule_job(inv, "qwen2.5-7b-instruct", "lora", serving=serving, serving_label="test", active_jobs=[],
                     devices=8, preempt=True)
    assert len(s.devices) == 8
    assert {p.name for p in s.preempt} == set().union(*held.values())


def test_preemption_prefers_devices_freed_by_services_already_chosen(ascend):
    """One device more than is free: the device whose services add the fewest stops is taken
    (ascend:1 holds one service, ascend:0 two), so only that one service stops."""
    inv, serving = ascend
    held = _holders(serving)
    s = schedule_job(inv, "qwen2.5-7b-instruct", "lora", serving=serving, serving_label="test", active_jobs=[],
                     devices=8 - len(held) + 1, preempt=True)
    single = min(held, key=lambda d: (len(held[d]), d))
    assert {p.name for p in s.preempt} == held[single]


def test_devices_of_active_jobs_are_never_preempted(h200):
    from appliance.train.dataset import DatasetSummary

    inv, serving = h200
    job = Job(id="job-x", instance="i", status="running", model="qwen2.5-7b-instruct", method="lora",
              recipe="lora-cuda", backend="cuda", image="img", devices=[inv and serving.services[0].devices[0]],
              dataset=DatasetSummary(path="/d", format="chat", records=1, words=1, size_bytes=1, sha256="0" * 64),
              job_dir="/j", output_dir="/o", output_model="m", created_ts=time.time())
    with pytest.raises(DevicesBusy) as err:
        schedule_job(inv, "qwen2.5-7b-instruct", "lora", serving=None, serving_label="none", active_jobs=[job],
                     preempt=True)
    assert "training job(s) job-x" in err.value.message and "wait for the running job" in err.value.fix


def test_no_serving_plan_means_every_device_is_free(h200):
    inv, _ = h200
    s = schedule_job(inv, "qwen2.5-7b-instruct", "lora", serving=None, serving_label="none", active_jobs=[])
    assert [d.index for d in s.devices] == [0] and not s.preempt


def test_a_job_that_fits_nowhere_exits_3(h200):
    inv, _ = h200
    with pytest.raises(NoFitError):
        schedule_job(inv, "qwen2.5-72b-instruct", "full", serving=None, serving_label="none", active_jobs=[])


def test_cli_snapshot_refusal_and_preempt_plan(chat_dataset):
    res = run_cli("train", "submit", "--model", "qwen2.5-7b-instruct", "--dataset", str(chat_dataset),
                  "--snapshot", str(H200))
    assert res.returncode == 3, res.stderr
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "is used by inference service(s)" in err[0] and "--preempt" in err[0]

    res = run_cli("train", "submit", "--model", "qwen2.5-7b-instruct", "--dataset", str(chat_dataset),
                  "--snapshot", str(H200), "--preempt")
    assert res.returncode == 0, res.stderr
    assert "stops during the job" in res.stdout and "comes back after the job" in res.stdout
    assert "nothing was started" in res.stdout

    res = run_cli("train", "submit", "--model", "qwen2.5-7b-instruct", "--dataset", str(chat_dataset),
                  "--snapshot", str(ASCEND8), "--devices", "8", "--preempt", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["started"] is False and out["job"] is None
    assert len(out["schedule"]["devices"]) == 8
    assert {p["name"] for p in out["schedule"]["preempt"]} >= {"llm-qwen3-32b"}


def test_cli_snapshot_with_chosen_inference_models(chat_dataset):
    """--inference-models: the serving plan to schedule against (here one that leaves the GPU busy)."""
    res = run_cli("train", "submit", "--model", "qwen2.5-7b-instruct", "--dataset", str(chat_dataset),
                  "--snapshot", str(H200), "--inference-models", "llama-3.1-8b-instruct", "--json")
    assert res.returncode == 3
    assert "llm-llama-3-1-8b-instruct" in res.stderr


@pytest.mark.docker  # without --snapshot, `train submit` reaches the engine before it checks this option
def test_inference_models_without_snapshot_is_a_usage_error(chat_dataset):
    res = run_cli("train", "submit", "--model", "qwen2.5-7b-instruct", "--dataset", str(chat_dataset),
                  "--inference-models", "llama-3.1-8b-instruct")
    assert res.returncode == 2 and "only applies to --snapshot" in res.stderr
