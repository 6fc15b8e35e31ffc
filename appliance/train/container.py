"""The job's files and container: config per training framework, mounts, devices, labels.

Layout on the host (``<data_dir>/train/<job>/``): ``job/`` (the generated config, mounted
read-only at ``/job``), ``output/`` (the output volume, mounted read-write at ``/output``)
and ``job.log`` (the container's log, saved when the job ends). The dataset file is mounted
read-only at ``/data/dataset.jsonl``; base weights (real recipes) read-only at
``/models/<model>``. Job containers have no network (``network none``: a job reads and
writes local files only), never restart on their own, and are never privileged; demo
(locally built) images also run with a read-only root and every capability dropped.

Config files are JSON (valid YAML, so ``config.yaml`` is read by LLaMA-Factory as is and by
the stdlib-only demo trainer without a YAML parser).
"""

from __future__ import annotations

import json
from pathlib import Path

from appliance.atomic import write_atomic
from appliance.runtime import labels as L
from appliance.runtime.docker_adapter import ContainerCreate
from appliance.train.models import Job

JOB_LABEL = "appliance.job"
JOB_KIND = "job"
DATASET_TARGET = "/data/dataset.jsonl"
JOB_TARGET = "/job"
OUTPUT_TARGET = "/output"

# framework -> default learning rate (method-specific where the framework's docs differ)
DEFAULT_LR = {("demo", "lora"): 2.0, ("demo", "full"): 2.0, ("llama-factory", "lora"): 1e-4,
              ("llama-factory", "full"): 1e-5, ("mindspeed-llm", "lora"): 1e-4, ("mindspeed-llm", "full"): 1e-6}
# model family -> LLaMA-Factory chat template / MindSpeed-LLM prompt type
TEMPLATES = {"qwen2.5": "qwen", "qwen3": "qwen3", "llama-3.1": "llama3", "deepseek-r1-distill": "deepseekr1",
             "glm-4": "glm4", "deepseek-v3": "deepseek3"}


def job_root(job_id: str) -> Path:
    from appliance.paths import data_dir

    return data_dir() / "train" / job_id


def container_name(instance: str, job_id: str) -> str:
    return f"{L.prefix(instance)}-{job_id}"


def weights_dir(model_id: str, catalog) -> Path:
    """Where the base model's bf16 weights are on the host (the planner's model path rule)."""
    from appliance.paths import data_dir

    root = Path(catalog.planner.models_dir or (data_dir() / "models"))
    return root / model_id / "bf16"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    write_atomic(path, text, mode=mode)


def _json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_job_files(job: Job, catalog) -> list[str]:
    """Generate ``job/`` for the job's framework; returns the files written (relative names)."""
    recipe = catalog.training[job.recipe]
    model = catalog.models[job.model]
    root = Path(job.job_dir)
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    if recipe.build is not None:  # our own trainer runs as its account: it writes the output directory
        from appliance.runtime import pyrt
        from appliance.runtime.ownership import hand_over

        hand_over(job.output_dir, pyrt.TRAINER_UID, recursive=True)
    h = job.hyper
    if recipe.framework == "demo":
        _write(root / "config.yaml", _json({
            "job": job.id, "model": job.model, "method": job.method, "dataset": DATASET_TARGET,
            "format": job.dataset.format, "output_dir": OUTPUT_TARGET, "epochs": h.epochs,
            "learning_rate": h.learning_rate, "lora_rank": h.lora_rank, "seed": h.seed,
            "step_delay_s": h.demo_step_delay_s,
            "model_config": {"hidden_size": model.hidden_size, "vocab_size": model.vocab_size,
                             "layers": model.layers}}))
        return ["config.yaml"]
    template = TEMPLATES.get(model.family, "default")
    if recipe.framework == "llama-factory":
        return _llama_factory(job, root, template)
    return _mindspeed(job, root, template, model)


def _llama_factory(job: Job, root: Path, template: str) -> list[str]:
    h = job.hyper
    base = f"/models/{job.model}"
    train_dir = f"{OUTPUT_TARGET}/adapter" if job.method == "lora" else f"{OUTPUT_TARGET}/weights"
    if job.dataset.format == "chat":
        info = {"file_name": DATASET_TARGET, "formatting": "sharegpt", "columns": {"messages": "messages"},
                "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                         "assistant_tag": "assistant", "system_tag": "system"}}
    else:
        info = {"file_name": DATASET_TARGET, "columns": {"prompt": "instruction", "query": "input",
                                                          "response": "output", "system": "system"}}
    config = {
        "model_name_or_path": base, "trust_remote_code": True, "stage": "sft", "do_train": True,
        "finetuning_type": job.method, "dataset": "appliance_job", "dataset_dir": JOB_TARGET, "template": template,
        "cutoff_len": h.seq_len, "overwrite_cache": True, "preprocessing_num_workers": 4,
        "output_dir": train_dir, "logging_steps": 1, "save_strategy": "no", "plot_loss": False,
        "overwrite_output_dir": True, "report_to": "none", "per_device_train_batch_size": h.micro_batch,
        "gradient_accumulation_steps": 8, "learning_rate": h.learning_rate, "num_train_epochs": float(h.epochs),
        "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "bf16": True, "seed": h.seed,
        "gradient_checkpointing": True,
    }
    files = ["config.yaml", "dataset_info.json", "run.sh"]
    if job.method == "lora":
        config.update({"lora_rank": h.lora_rank, "lora_alpha": 2 * h.lora_rank, "lora_target": "all"})
        export = {"model_name_or_path": base, "adapter_name_or_path": train_dir, "template": template,
                  "finetuning_type": "lora", "trust_remote_code": True, "export_dir": f"{OUTPUT_TARGET}/merged",
                  "export_size": 5, "export_device": "cpu", "export_legacy_format": False}
        _write(root / "export.yaml", _json(export))
        files.append("export.yaml")
    else:
        config["deepspeed"] = f"{JOB_TARGET}/ds_z3.json"
        _write(root / "ds_z3.json", _json({
            "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto", "bf16": {"enabled": "auto"},
            "zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                                  "stage3_gather_16bit_weights_on_model_save": True}}))
        files.append("ds_z3.json")
    _write(root / "config.yaml", _json(config))
    _write(root / "dataset_info.json", _json({"appliance_job": info}))
    # train, then (LoRA) merge the adapter into full weights that any engine can serve
    script = ["#!/bin/bash", "set -euo pipefail", "export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1",
              f"llamafactory-cli train {JOB_TARGET}/config.yaml"]
    if job.method == "lora":
        script.append(f"llamafactory-cli export {JOB_TARGET}/export.yaml")
    _write(root / "run.sh", "\n".join(script) + "\n", 0o755)
    return files


def _mindspeed(job: Job, root: Path, template: str, model) -> list[str]:
    """MindSpeed-LLM: preprocess with its instruction handlers, then ``posttrain_gpt.py``.

    A template for Ascend boxes (the catalog marks the image tag unverified): it has not
    been run on hardware by this project.
    """
    h = job.hyper
    n = max(1, len(job.devices))
    handler = "SharegptStyleInstructionHandler" if job.dataset.format == "chat" else "AlpacaStyleInstructionHandler"
    base = f"/models/{job.model}"
    lora = (f" --lora-r {h.lora_rank} --lora-alpha {2 * h.lora_rank} "
            "--lora-target-modules linear_qkv linear_proj linear_fc1 linear_fc2") if job.method == "lora" else ""
    script = f"""#!/bin/bash
set -euo pipefail
source /usr/local/Ascend/ascend-toolkit/set_env.sh
cd "${{MINDSPEED_LLM_HOME:-/workspace/MindSpeed-LLM}}"
mkdir -p /tmp/data
python preprocess_data.py --input {DATASET_TARGET} --tokenizer-name-or-path {base} \\
  --output-prefix /tmp/data/job --handler-name {handler} --tokenizer-type PretrainedFromHF \\
  --workers 4 --prompt-type {template}
torchrun --nproc_per_node {n} posttrain_gpt.py --stage sft --finetune --is-instruction-dataset \\
  --tokenizer-type PretrainedFromHF --tokenizer-name-or-path {base} --load {base} \\
  --data-path /tmp/data/job --save {OUTPUT_TARGET}/weights \\
  --num-layers {model.layers} --hidden-size {model.hidden_size} --num-attention-heads {model.attention_heads} \\
  --seq-length {h.seq_len} --micro-batch-size {h.micro_batch} --global-batch-size {8 * h.micro_batch * n} \\
  --lr {h.learning_rate} --train-iters ${{TRAIN_ITERS:-1000}} --log-interval 1 --bf16 \\
  --tensor-model-parallel-size {n} --use-distributed-optimizer --prompt-type {template}{lora}
"""
    _write(root / "run.sh", script, 0o755)
    return ["run.sh"]


def _trainer_user() -> str:
    """Our own trainer's account (a vendor training image keeps its own user, root)."""
    from appliance.runtime import pyrt
    from appliance.runtime.ownership import container_user

    return container_user(pyrt.TRAINER_UID)


def job_container(job: Job, catalog, inventory) -> ContainerCreate:
    """Docker settings of the job's container (labels say instance, job, model, devices)."""
    from appliance.runtime.compose import device_access

    recipe = catalog.training[job.recipe]
    access = device_access(job.devices, inventory, job.id)
    labels = {**L.base_labels(job.instance), JOB_LABEL: job.id, L.KIND: JOB_KIND, L.MODELS: job.model,
              "appliance.recipe": job.recipe}
    if job.devices:
        labels[L.DEVICES] = ",".join(job.device_keys())
    if job.demo:
        labels[L.DEMO] = "true"
    binds = {job.dataset.path: {"bind": DATASET_TARGET, "mode": "ro"},
             job.job_dir: {"bind": JOB_TARGET, "mode": "ro"},
             job.output_dir: {"bind": OUTPUT_TARGET, "mode": "rw"}}
    for host, target in sorted(access.volumes.items()):
        binds[host] = {"bind": target, "mode": "ro"}
    local = recipe.build is not None
    if not local:
        binds[str(weights_dir(job.model, catalog))] = {"bind": f"/models/{job.model}", "mode": "ro"}
    env = {**recipe.env, **access.env, "APPLIANCE_JOB": job.id}
    entrypoint = list(recipe.entrypoint)
    command = list(recipe.args)
    if recipe.framework == "llama-factory":  # train + merge (see write_job_files)
        entrypoint, command = ["bash", f"{JOB_TARGET}/run.sh"], []
    return ContainerCreate(
        name=container_name(job.instance, job.id), image=job.image, labels=labels, command=command or None,
        entrypoint=entrypoint or None, env=env, network="none", binds=binds,
        tmpfs={"/tmp": "rw,size=64m"} if local else {}, devices=list(access.devices),
        device_requests=list(access.device_requests), group_add=list(access.group_add), runtime=access.runtime,
        cap_add=list(access.cap_add), cap_drop=["ALL"] if local else [], security_opt=["no-new-privileges:true"],
        user=_trainer_user() if local else None,
        ipc_mode=access.ipc_mode, read_only=local, restart="no", memory_limit_mib=512 if local else None,
        shm_size_mib=None if (local or access.ipc_mode == "host") else 16384, pids_limit=256 if local else None)
