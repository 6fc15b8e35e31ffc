"""Weights an engine serves only after its own tool converted them (vllm_musa), made on the node.

Why here and this way: the converter ships inside the vendor's engine image and may need the
accelerators, so it runs as a one-off container of that image (devices from the chip driver, no
network, the store's weights read-only, the output directory writable) before the service
starts. It writes into ``<output>.partial`` and renames on success, then records what it did in
``<output>/.appliance-conversion.json``; a later deploy with the same tool, image, command and
source weights reuses it, anything else converts again. A failed conversion stops the deploy with
the converter's last log lines and leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from appliance.atomic import write_atomic
from appliance.errors import RuntimeFailure

LOG = logging.getLogger(__name__)
MARKER = ".appliance-conversion.json"
CONVERSION_KIND = "conversion"
LOG_LINES_ON_FAILURE = 20


def fingerprint(ps, image_ref: str, source_digest: str | None) -> dict:
    """What a conversion depends on: redone when any of it changes."""
    conv = ps.conversion
    return {"tool": conv.tool, "image": image_ref, "entrypoint": conv.entrypoint, "command": conv.command,
            "source_path": conv.source_path, "source_digest": source_digest, "model": ps.model,
            "precision": ps.precision, "tensor_parallel": ps.tensor_parallel}


def is_current(output: Path, want: dict) -> bool:
    try:
        have = json.loads((output / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return have == want


def _source_digest(ps) -> str | None:
    """The store's record of the source weights (its key and file digests), so a re-import converts again."""
    from appliance.models.store import ModelStore

    manifest = ModelStore().get(ps.model, ps.precision)
    if manifest is None:
        return None
    return json.dumps(manifest.model_dump(mode="json").get("files"), sort_keys=True, default=str)


def pending(plan) -> list:
    """Planned services whose engine needs converted weights."""
    return [ps for ps in plan.services if ps.conversion is not None and not ps.demo]


def convert_all(plan, inventory, docker, *, instance: str, dry_run: bool = False, say=None,
                source_digest=_source_digest) -> list[str]:
    """Run every conversion the plan needs and is not current; returns one line per service."""
    from appliance.runtime.images import ImageEnsurer

    say = say or (lambda msg: None)
    done: list[str] = []
    for ps in pending(plan):
        output = Path(ps.conversion.output_path)
        ensurer = ImageEnsurer(docker, dry_run=dry_run, progress=say)
        ref = ensurer.ensure(ps.image, ps.build, ps.recipe).ref
        want = fingerprint(ps, ref, source_digest(ps))
        if is_current(output, want):
            done.append(f"{ps.name}: converted weights at {output} are current")
            continue
        if dry_run:
            done.append(f"{ps.name}: would convert {ps.conversion.source_path} with {ps.conversion.tool} "
                        f"(tp {ps.tensor_parallel}) into {output}")
            continue
        start = time.monotonic()
        say(f"{ps.name}: converting its weights with {ps.conversion.tool} (tp {ps.tensor_parallel})")
        _run(ps, ref, inventory, docker, instance, output, want)
        done.append(f"{ps.name}: converted its weights with {ps.conversion.tool} in "
                    f"{time.monotonic() - start:.1f}s into {output}")
    return done


def _run(ps, image_ref: str, inventory, docker, instance: str, output: Path, want: dict) -> None:
    from appliance.runtime import labels as L
    from appliance.runtime.compose import device_access
    from appliance.runtime.docker_adapter import ContainerCreate

    conv = ps.conversion
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    access = device_access(ps.devices, inventory, ps.name)
    binds = {conv.source_path: {"bind": conv.source_path, "mode": "ro"},
             str(partial): {"bind": conv.output_path, "mode": "rw"}}
    for host, target in sorted(access.volumes.items()):
        binds[host] = {"bind": target, "mode": "ro"}
    labels = {**L.base_labels(instance), L.KIND: CONVERSION_KIND, L.SERVICE: ps.name}
    spec = ContainerCreate(
        name=f"{L.container_name(instance, ps.name, 'convert')}", image=image_ref, labels=labels,
        entrypoint=list(conv.entrypoint) or None, command=list(conv.command) or None,
        env={**ps.env, **access.env}, network="none", binds=binds, devices=list(access.devices),
        device_requests=list(access.device_requests), group_add=list(access.group_add), runtime=access.runtime,
        cap_add=list(access.cap_add), security_opt=["no-new-privileges:true"], ipc_mode=access.ipc_mode,
        restart="no")
    cid = docker.create_container(spec)
    try:
        docker.start(cid)
        code = docker.wait(cid, timeout_s=conv.timeout_s)
        if code != 0:
            lines = docker.log_tail(cid, LOG_LINES_ON_FAILURE)
            raise RuntimeFailure(f"{conv.tool} exited with code {code} converting the weights of {ps.model} "
                                 f"({ps.precision}, tp {ps.tensor_parallel}); its last lines: "
                                 + " | ".join(lines[-5:]), where=f"service {ps.name}",
                                 fix="check the weights (appliance models verify) and the converter's log above")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        docker.remove(cid, force=True)
    write_atomic(partial / MARKER, (json.dumps(want, indent=2, sort_keys=True) + "\n").encode())
    if output.exists():
        shutil.rmtree(output)
    partial.rename(output)
    LOG.info("converted %s into %s", ps.name, output)
