"""Register a finished job's output as a new model in the node's local catalog overlay.

The overlay (``<data_dir>/catalog/*.yaml``, merged by :func:`appliance.catalog.load_catalog`)
gets one file per fine-tuned model: the base model's numbers (same architecture and size,
so the planner's memory model holds), ``default: false`` (never picked for the
out-of-the-box set), and ``fine_tune`` saying base, method, job and output. The planner
serves it with its base model's engines; weights come from the planner's usual path
``<models_dir>/<id>/bf16``, which is linked to the job's servable output (full weights, or
the LoRA adapter merged into the base by the job). Registration is idempotent (the same
file is rewritten) and checked: a file the catalog would reject is removed again.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from appliance.atomic import write_atomic
from appliance.errors import RuntimeFailure
from appliance.train.models import Job

OUTPUT_FILES = {"adapter": ("adapter_model.safetensors", "adapter_config.json"),
                "weights": ("model.safetensors", "config.json")}


def overlay_file(model_id: str) -> Path:
    from appliance.catalog.loader import overlay_dir

    return overlay_dir() / f"finetuned-{model_id}.yaml"


def output_files(job: Job) -> list[str]:
    out = Path(job.output_dir)
    if not out.is_dir():
        return []
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def check_output(job: Job) -> str | None:
    """Why the output is not a usable checkpoint (None when it is)."""
    files = set(output_files(job))
    if not files:
        return f"the job wrote no files to its output volume {job.output_dir}"
    if job.demo:
        need = OUTPUT_FILES[job.artifact] + ("trainer_state.json",)
        missing = [f for f in need if f not in files]
        return f"the output lacks {', '.join(missing)}" if missing else None
    servable = "merged" if job.method == "lora" else "weights"
    if not any(f.startswith(f"{servable}/") for f in files):
        return f"the output has no {servable}/ directory"
    return None


def _servable_dir(job: Job) -> Path:
    out = Path(job.output_dir)
    if job.demo:
        return out
    return out / ("merged" if job.method == "lora" else "weights")


def register(job: Job, catalog=None) -> Path:
    """Write the overlay entry for ``job.output_model``; returns the overlay file."""
    from appliance.catalog import load_catalog
    from appliance.errors import CatalogError
    from appliance.train.container import weights_dir

    cat = catalog or load_catalog()
    base = cat.models[job.model]
    recipe = cat.training[job.recipe]
    entry = base.model_dump(mode="json", exclude_none=True,
                            exclude={"variants", "fine_tune", "config_source", "name", "default", "quality", "tags"})
    entry.update({
        "name": f"{base.name} fine-tuned ({job.method}, job {job.id})",
        "default": False, "quality": base.quality, "tags": sorted(set(base.tags) | {"fine-tuned"}),
        "variants": [{"precision": "bf16", "source": str(_servable_dir(job))}],
        "fine_tune": {"base_model": job.model, "method": job.method, "artifact": job.artifact, "job": job.id,
                      "recipe": job.recipe, "output": job.output_dir,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job.finished_ts or time.time()))},
    })
    if recipe.framework == "demo":
        entry["demo"] = True
    path = overlay_file(job.output_model)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("# Registered by `appliance train` (job %s). Local to this node; remove the file to forget it.\n"
            % job.id) + yaml.safe_dump({"schema_version": 1, "models": {job.output_model: entry}}, sort_keys=True)
    write_atomic(path, text)
    try:
        load_catalog()
    except CatalogError as exc:
        path.unlink(missing_ok=True)
        raise RuntimeFailure(f"the fine-tuned model could not be registered: {exc.one_line()}",
                             where=f"job {job.id}", fix="see docs/training.md (registering outputs)") from None
    if not job.demo:
        link = weights_dir(job.output_model, cat)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            if link.is_symlink():
                link.unlink()
        if not link.exists():
            link.symlink_to(_servable_dir(job), target_is_directory=True)
    return path
