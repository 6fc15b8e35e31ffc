"""Where a fine-tuning job runs: recipe and memory from the planner, devices from what is free.

The recipe, image and the number of devices come from
:func:`appliance.planner.training.plan_training` (the catalog's memory rules). Which devices
is decided here, against what already uses them:

- the inference services of the serving plan (the active release's plan; for a node
  snapshot, the plan ``appliance plan`` would make for it). Inference engines reserve
  most of a device's memory up front (vLLM, SGLang, MindIE pre-allocate the KV cache), so a
  device a service is planned on is never shared with a job;
- the devices of active jobs (never preempted: a job is not restarted for another job).

When too few devices are free the job is refused with the reason. With ``preempt`` the
fewest services are chosen to make room (devices that free up with a service already
chosen are preferred) and listed: they are stopped for the job and restored after it.
"""

from __future__ import annotations

from appliance.errors import ApplianceError
from appliance.planner.models import DeviceRef, Plan
from appliance.train.models import DeviceUse, Hyper, Job, PreemptedService, Schedule


class DevicesBusy(ApplianceError):
    """The devices a job needs are in use (exit 3, like a plan that does not fit)."""

    exit_code = 3


def key(ref: DeviceRef) -> str:
    return f"{ref.vendor}:{ref.index}"


def _same(a: DeviceRef, b: DeviceRef) -> bool:
    if a.vendor != b.vendor:
        return False
    if a.uuid and b.uuid:
        return a.uuid == b.uuid
    if a.pci_bdf and b.pci_bdf:
        return a.pci_bdf == b.pci_bdf
    return a.index == b.index


def schedule_job(inventory, model_id: str, method: str, *, serving: Plan | None, serving_label: str,
                 active_jobs: list[Job], hyper: Hyper | None = None, devices: int | None = None,
                 preempt: bool = False, catalog=None) -> Schedule:
    """The job's devices and what must stop for it; raises DevicesBusy / NoFitError."""
    from appliance.catalog import load_catalog
    from appliance.planner.core import device_groups
    from appliance.planner.training import plan_training

    cat = catalog or load_catalog()
    hyper = hyper or Hyper()
    tp = plan_training(inventory, model_id, method, cat, seq_len=hyper.seq_len, micro_batch=hyper.micro_batch,
                       lora_rank=hyper.lora_rank, devices=devices)
    base = dict(model=model_id, method=method, recipe=tp.recipe, backend=tp.backend, image=tp.image, build=tp.build,
                demo=tp.demo, memory=tp.memory, usable_mib_per_device=tp.usable_mib_per_device,
                inference_plan=serving_label, explain=list(tp.explain))
    if not tp.devices:
        return Schedule(**{**base, "explain": base["explain"] + ["runs on the host CPU: no accelerator is involved"]})
    group = next(g for g in device_groups(inventory, cat)
                 if any(s.ref is not None and _same(s.ref, tp.devices[0]) for s in g.slots))
    refs = [s.ref for s in group.slots if s.ref is not None]
    services = serving.services if serving is not None else []
    uses: list[DeviceUse] = []
    for ref in refs:
        uses.append(DeviceUse(
            device=key(ref),
            services=sorted(s.name for s in services if any(_same(d, ref) for d in s.devices)),
            jobs=sorted(j.id for j in active_jobs if any(_same(d, ref) for d in j.devices))))
    need = len(tp.devices)
    label = group.label.split(" x ", 1)[-1]
    what = (f"{method} fine-tuning of {model_id} needs {need} device(s) of {label} "
            f"({tp.memory.total_mib_per_device:,} MiB each)")
    free = [i for i, u in enumerate(uses) if u.free]
    if len(free) >= need:
        chosen = free[:need]
        return Schedule(**{**base, "explain": base["explain"] + [f"{what}: {', '.join(uses[i].device for i in chosen)} "
                                                                  "are free"]},
                        devices=[refs[i] for i in chosen], device_use=uses)
    busy = "; ".join(f"{u.device} is used by " + " and ".join(
        ([f"inference service(s) {', '.join(u.services)}"] if u.services else [])
        + ([f"training job(s) {', '.join(u.jobs)}"] if u.jobs else [])) for u in uses if not u.free)
    reason = f"{what}; {len(free)} of {len(uses)} free: {busy}"
    usable = [i for i, u in enumerate(uses) if not u.jobs]
    if len(usable) < need:
        raise DevicesBusy(reason, where="train submit",
                          fix="wait for the running job(s) to finish (appliance train list) or ask for fewer devices")
    if not preempt:
        stop = _fewest_services(uses, usable, need)[1]
        raise DevicesBusy(reason, where="train submit",
                          fix=f"add --preempt to stop {', '.join(stop)} for the job (restored after it), "
                              "or wait until the devices are free")
    chosen, stop = _fewest_services(uses, usable, need)
    by_name = {s.name: s for s in services}
    preempted = [PreemptedService(name=n, model=by_name[n].model, devices=[key(d) for d in by_name[n].devices])
                 for n in stop]
    explain = base["explain"] + [f"{what}: preempting {', '.join(stop)} frees "
                                 f"{', '.join(uses[i].device for i in chosen)}; they are restored after the job"]
    return Schedule(**{**base, "explain": explain}, devices=[refs[i] for i in chosen], device_use=uses,
                    preempt=preempted)


def _fewest_services(uses: list[DeviceUse], usable: list[int], need: int) -> tuple[list[int], list[str]]:
    """Greedy: free devices first, then the device whose services add the fewest new stops."""
    chosen: list[int] = []
    stop: set[str] = set()
    pool = list(usable)
    while len(chosen) < need and pool:
        best = min(pool, key=lambda i: (len(set(uses[i].services) - stop), i))
        chosen.append(best)
        stop |= set(uses[best].services)
        pool.remove(best)
    return sorted(chosen), sorted(stop)
