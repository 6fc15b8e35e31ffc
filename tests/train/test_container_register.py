"""Job files and container settings per recipe; registering an output in the catalog overlay."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from appliance.errors import CatalogError
from appliance.train.dataset import validate_dataset
from appliance.train.models import Hyper, Job
from tests.train.conftest import ASCEND8, CHAT, H200, INSTRUCTION, write_jsonl


def _job(tmp_path: Path, *, model: str, method: str, recipe: str, devices=(), fmt_records=CHAT, demo=False,
         image="img:1") -> Job:
    from appliance.catalog import load_catalog

    ds = validate_dataset(write_jsonl(tmp_path / "d.jsonl", list(fmt_records)))
    rec = load_catalog().training[recipe]
    return Job(id="job-0123abcd", instance="inst", model=model, method=method, recipe=recipe, backend=rec.backend,
               image=image, build=rec.build, demo=demo, dataset=ds, hyper=Hyper(learning_rate=1e-4),
               devices=list(devices), job_dir=str(tmp_path / "train" / "job"),
               output_dir=str(tmp_path / "train" / "output"), output_model=f"{model}-{method}-0123abcd",
               artifact="adapter" if method == "lora" else "weights", created_ts=time.time())


def _devices(snapshot, n):
    from appliance.inventory.detect import detect
    from appliance.planner.training import plan_training

    inv = detect(snapshot=str(snapshot), usage=False)
    return inv, plan_training(inv, "qwen2.5-7b-instruct", "full" if n > 1 else "lora", devices=n).devices


def test_demo_job_container_is_labelled_isolated_and_read_only(tmp_path):
    from appliance.catalog import load_catalog
    from appliance.train.container import job_container, write_job_files

    cat = load_catalog()
    job = _job(tmp_path, model="demo-chat", method="lora", recipe="lora-cpu-demo", demo=True,
               image="appliance/demo-trainer:0.1.0")
    assert write_job_files(job, cat) == ["config.yaml"]
    config = json.loads((Path(job.job_dir) / "config.yaml").read_text())
    assert config["dataset"] == "/data/dataset.jsonl" and config["output_dir"] == "/output"
    assert config["model_config"]["hidden_size"] == cat.models["demo-chat"].hidden_size
    spec = job_container(job, cat, None)
    assert spec.labels["appliance.managed"] == "true" and spec.labels["appliance.instance"] == "inst"
    assert spec.labels["appliance.job"] == job.id and spec.labels["appliance.kind"] == "job"
    assert spec.binds[job.dataset.path] == {"bind": "/data/dataset.jsonl", "mode": "ro"}
    assert spec.binds[job.job_dir] == {"bind": "/job", "mode": "ro"}
    assert spec.binds[job.output_dir] == {"bind": "/output", "mode": "rw"}
    assert spec.network == "none" and spec.restart == "no"
    assert spec.read_only and spec.cap_drop == ["ALL"] and not spec.devices and not spec.device_requests
    assert spec.command == ["--config", "/job/config.yaml"] and spec.entrypoint is None
    # our trainer runs as its own account (root hands it the output directory it writes)
    import os

    from appliance.runtime import pyrt

    if os.geteuid() == 0:
        assert spec.user == f"{pyrt.TRAINER_UID}:{pyrt.TRAINER_UID}"
        assert os.stat(job.output_dir).st_uid == pyrt.TRAINER_UID
    else:
        assert spec.user == f"{os.geteuid()}:{os.getegid()}"


def test_cuda_lora_job_trains_then_merges_with_llama_factory(tmp_path):
    from appliance.catalog import load_catalog
    from appliance.train.container import job_container, write_job_files

    cat = load_catalog()
    inv, devs = _devices(H200, 1)
    job = _job(tmp_path, model="qwen2.5-7b-instruct", method="lora", recipe="lora-cuda", devices=devs)
    files = write_job_files(job, cat)
    assert set(files) == {"config.yaml", "dataset_info.json", "run.sh", "export.yaml"}
    root = Path(job.job_dir)
    config = yaml.safe_load((root / "config.yaml").read_text())  # JSON is YAML: LLaMA-Factory reads it
    assert config["finetuning_type"] == "lora" and config["template"] == "qwen"
    assert config["model_name_or_path"] == "/models/qwen2.5-7b-instruct" and config["output_dir"] == "/output/adapter"
    info = json.loads((root / "dataset_info.json").read_text())["appliance_job"]
    assert info["formatting"] == "sharegpt" and info["file_name"] == "/data/dataset.jsonl"
    assert yaml.safe_load((root / "export.yaml").read_text())["export_dir"] == "/output/merged"
    script = (root / "run.sh").read_text()
    assert "llamafactory-cli train /job/config.yaml" in script and "llamafactory-cli export /job/export.yaml" in script
    spec = job_container(job, cat, inv)
    assert spec.entrypoint == ["bash", "/job/run.sh"]
    assert [r["device_ids"] for r in spec.device_requests] == [[devs[0].uuid]]
    weights = {k: v for k, v in spec.binds.items() if v["bind"] == "/models/qwen2.5-7b-instruct"}
    assert len(weights) == 1 and list(weights.values())[0]["mode"] == "ro"
    assert list(weights)[0].endswith("models/qwen2.5-7b-instruct/bf16")
    assert spec.labels["appliance.devices"] == "nvidia:0" and not spec.read_only


def test_instruction_dataset_maps_to_alpaca_columns(tmp_path):
    from appliance.catalog import load_catalog
    from appliance.train.container import write_job_files

    job = _job(tmp_path, model="qwen2.5-7b-instruct", method="full", recipe="full-cuda", fmt_records=INSTRUCTION)
    write_job_files(job, load_catalog())
    info = json.loads((Path(job.job_dir) / "dataset_info.json").read_text())["appliance_job"]
    assert info["columns"] == {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}
    config = json.loads((Path(job.job_dir) / "config.yaml").read_text())
    assert config["deepspeed"] == "/job/ds_z3.json" and config["output_dir"] == "/output/weights"


def test_ascend_job_gets_davinci_devices_and_a_mindspeed_script(tmp_path):
    from appliance.catalog import load_catalog
    from appliance.train.container import job_container, write_job_files

    cat = load_catalog()
    inv, devs = _devices(ASCEND8, 4)
    job = _job(tmp_path, model="qwen2.5-7b-instruct", method="full", recipe="full-cann", devices=devs)
    assert write_job_files(job, cat) == ["run.sh"]
    script = (Path(job.job_dir) / "run.sh").read_text()
    assert "SharegptStyleInstructionHandler" in script and "--nproc_per_node 4" in script
    spec = job_container(job, cat, inv)
    assert spec.entrypoint == ["bash", "/job/run.sh"]
    nodes = [d.split(":")[0] for d in spec.devices]
    for d in devs:
        assert f"/dev/davinci{d.physical_id}" in nodes
    assert "/dev/davinci_manager" in nodes and len([n for n in nodes if n[len("/dev/davinci"):].isdigit()]) == 4


def _finish_demo_output(job: Job, *, lora: bool = True) -> None:
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ("adapter_model.safetensors", "adapter_config.json") if lora else ("model.safetensors", "config.json")
    for name in names + ("trainer_state.json",):
        (out / name).write_text("{}")


def test_registered_output_is_a_model_the_planner_serves_with_the_base_engine(tmp_path):
    from appliance.catalog import load_catalog
    from appliance.inventory.detect import detect
    from appliance.planner import plan
    from appliance.train.register import check_output, register

    job = _job(tmp_path, model="demo-chat", method="lora", recipe="lora-cpu-demo", demo=True)
    assert "wrote no files" in check_output(job)
    _finish_demo_output(job)
    assert check_output(job) is None
    path = register(job)
    assert path.parent.name == "catalog" and path.name == f"finetuned-{job.output_model}.yaml"
    cat = load_catalog()
    model = cat.models[job.output_model]
    assert model.fine_tune.base_model == "demo-chat" and model.fine_tune.job == job.id and model.default is False
    assert model.hidden_size == cat.models["demo-chat"].hidden_size and model.demo
    inv = detect(snapshot=str(REPO_CPU), usage=False)
    p = plan(inv, cat, models=["demo-chat", job.output_model], demo=True)
    svc = next(s for s in p.services if s.model == job.output_model)
    assert svc.engine == "demo-engine" and svc.served_model_name == job.output_model
    # never part of the default set
    default = plan(inv, cat, demo=True)
    assert job.output_model not in {s.model for s in default.services}
    assert register(job) == path  # idempotent


def test_overlay_with_a_dangling_base_model_is_a_catalog_error(tmp_path):
    from appliance.catalog import load_catalog
    from appliance.catalog.loader import overlay_dir

    overlay_dir().mkdir(parents=True, exist_ok=True)  # the templated overlay is there already
    bad = overlay_dir() / "finetuned-x.yaml"
    entry = load_catalog().models["demo-chat"].model_dump(mode="json", exclude_none=True)
    entry["fine_tune"] = {"base_model": "demo-chatt", "method": "lora", "artifact": "adapter", "job": "job-1",
                          "recipe": "lora-cpu-demo", "output": "/x"}
    bad.write_text(yaml.safe_dump({"schema_version": 1, "models": {"demo-chat-lora-x": entry}}))
    with pytest.raises(CatalogError) as err:
        load_catalog()
    assert "finetuned-x.yaml" in err.value.where and "fine_tune.base_model" in err.value.where
    assert "demo-chat" in err.value.fix


REPO_CPU = Path(__file__).resolve().parents[1] / "fixtures" / "nodes" / "cpu-only"
