"""``appliance train submit|list|status|logs|cancel`` and ``appliance serve``.

Thin: options -> one call into :mod:`appliance.train` -> render (rich for people, ``--json``
for machines). Progress lines go to stderr so ``--json`` stays clean on stdout.
"""

from __future__ import annotations

import time

import click

from appliance.cli.output import console, emit
from appliance.cli.streams import parse_tail, progress_printer, write_log_stream


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _progress_text(job) -> str:
    p = job.progress
    if p.step is None:
        return "-"
    text = f"{p.step}/{p.total_steps or '?'}"
    if p.percent is not None:
        text += f" ({p.percent:g}%)"
    if p.loss is not None:
        text += f" loss {p.loss:.4f}"
    if job.active and p.eta_s is not None:
        text += f" eta {p.eta_s:.0f}s"
    return text


def _devices(refs) -> str:
    return ", ".join(f"{d.vendor}:{d.index}" for d in refs) or "cpu"


@click.group("train")
def train() -> None:
    """Fine-tune a catalog model on your data (LoRA or full), then serve it with `appliance serve`."""


@train.command("submit")
@click.option("--model", required=True, help="Catalog id of the base model (appliance catalog list models).")
@click.option("--dataset", required=True, type=click.Path(dir_okay=False),
              help="JSONL file: chat {\"messages\": [...]} or instruction "
                   "{\"instruction\", \"input\", \"output\"} records.")
@click.option("--recipe", "method", type=click.Choice(["lora", "full"]), default="lora", show_default=True,
              help="LoRA adapter or full fine-tuning.")
@click.option("--devices", type=int, default=None, help="Number of devices (default: the fewest that fit).")
@click.option("--preempt", is_flag=True,
              help="If inference holds the devices, stop those services for the job and restore them after it.")
@click.option("--snapshot", type=click.Path(exists=True, file_okay=False), default=None,
              help="Schedule against a node snapshot and its serving plan; nothing is started.")
@click.option("--inference-models", default=None, metavar="ID[,ID...]",
              help="With --snapshot: the models served on it (default: the default set).")
@click.option("--dry-run", is_flag=True, help="Validate and schedule only; start nothing.")
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--learning-rate", type=float, default=None, help="Default: the training framework's.")
@click.option("--lora-rank", type=int, default=8, show_default=True)
@click.option("--seq-len", type=int, default=2048, show_default=True, help="Tokens per sample (memory estimate).")
@click.option("--output-model", default=None, metavar="ID", help="Catalog id for the result (default: derived).")
@click.option("--demo-step-delay", type=float, default=0.0, hidden=True, help="Demo trainer: seconds per step.")
@click.option("--wait", is_flag=True, help="Wait for the job to end, printing its progress.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def submit(model, dataset, method, devices, preempt, snapshot, inference_models, dry_run, epochs, learning_rate,
           lora_rank, seq_len, output_model, demo_step_delay, wait, as_json, quiet) -> None:
    """Validate the dataset, schedule the job on free devices and start it.

    Exit 2 bad input (the dataset error names the file and line), 3 the job does not fit or
    its devices are in use (the reason says by what; --preempt makes room).
    """
    from appliance.deploy.weights import box_catalog
    from appliance.errors import UsageError
    from appliance.train.jobs import submit_job
    from appliance.train.models import Hyper

    if epochs < 1 or lora_rank < 1 or seq_len < 1:
        raise UsageError("--epochs, --lora-rank and --seq-len must be positive", where="options", fix="e.g. --epochs 3")
    models = [m.strip() for m in inference_models.split(",") if m.strip()] if inference_models else None
    hyper = Hyper(epochs=epochs, learning_rate=learning_rate, lora_rank=lora_rank, seq_len=seq_len,
                  demo_step_delay_s=demo_step_delay)
    say = progress_printer(quiet)
    result = submit_job(model, dataset, method, devices=devices, preempt=preempt, snapshot=snapshot,
                        inference_models=models, dry_run=dry_run, hyper=hyper, output_model=output_model,
                        progress=say, catalog=box_catalog())
    if wait and result.job is not None:
        result.job = _wait(result.job.id, say)
    emit(result, as_json, _render_submit)
    if wait and result.job is not None and result.job.status != "completed":
        raise SystemExit(1)


def _wait(job_id: str, say):
    from appliance.train.jobs import job_status

    last = None
    while True:
        job = job_status(job_id)
        text = _progress_text(job)
        if text != last and text != "-":
            say(f"{job.id}: {text}")
            last = text
        if not job.active:
            return job
        time.sleep(1.0)


def _render_submit(r) -> None:
    from rich.table import Table

    con = console()
    s = r.schedule
    con.print(f"dataset {r.dataset.path}: {r.dataset.records} {r.dataset.format} record(s), "
              f"{r.dataset.words:,} words")
    t = Table(title=f"{s.method} fine-tuning of {s.model}", title_justify="left", show_header=False)
    t.add_column("")
    t.add_column("")
    t.add_row("recipe", s.recipe + (" (DEMO trainer)" if s.demo else ""))
    t.add_row("image", s.image)
    t.add_row("devices", _devices(s.devices))
    usable = f" of {s.usable_mib_per_device:,} usable" if s.usable_mib_per_device else ""
    where = "per device" if s.devices else "of host RAM"
    t.add_row("memory", f"{s.memory.total_mib_per_device:,} MiB {where}{usable} (weights {s.memory.weights_mib:,}, "
                        f"states {s.memory.states_mib:,}, activations {s.memory.activations_mib:,}, "
                        f"overhead {s.memory.overhead_mib:,})")
    t.add_row("serving plan", s.inference_plan)
    con.print(t)
    if s.device_use:
        use = Table(title="devices", title_justify="left")
        for col in ("device", "used by", "job"):
            use.add_column(col)
        chosen = {f"{d.vendor}:{d.index}" for d in s.devices}
        for u in s.device_use:
            who = ", ".join(u.services + u.jobs) or "free"
            use.add_row(u.device, who, "yes" if u.device in chosen else "")
        con.print(use)
    if s.preempt:
        con.print("[bold]stops during the job[/bold] (held: the agent leaves them down):")
        for p in s.preempt:
            con.print(f"  {p.name} ({p.model} on {', '.join(p.devices)})")
        con.print("[bold]comes back after the job[/bold] (health-gated): " + ", ".join(p.name for p in s.preempt))
    if not r.started:
        con.print(f"[yellow]{r.reason}[/yellow]")
        return
    j = r.job
    con.print(f"[bold]job {j.id}[/bold] {j.status}" + (f": {_progress_text(j)}" if j.progress.step is not None else ""))
    if j.status == "completed":
        con.print(f"registered model {j.output_model}; serve it: appliance serve {j.id}")
    elif j.status in ("failed", "cancelled"):
        con.print(f"{j.status}: {j.error or ''}")
    else:
        con.print(f"follow it: appliance train status {j.id} | appliance train logs {j.id} -f")


@train.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
def list_cmd(as_json: bool) -> None:
    """Every job of this instance, newest first (status derived from the containers)."""
    from rich.table import Table

    from appliance.train.jobs import list_jobs

    jobs = list_jobs()

    def render(rows) -> None:
        if not rows:
            click.echo("no training jobs (submit one: appliance train submit --model ID --dataset FILE)")
            return
        t = Table()
        for col in ("job", "status", "model", "recipe", "devices", "progress", "created", "output"):
            t.add_column(col)
        for j in rows:
            t.add_row(j.id, j.status, j.model, j.recipe, _devices(j.devices), _progress_text(j), _when(j.created_ts),
                      j.output_model if j.registered else "")
        console().print(t)

    if as_json:
        click.echo(__import__("json").dumps([j.model_dump(mode="json") for j in jobs], indent=2))
    else:
        render(jobs)


@train.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable job record.")
def status(job_id: str, as_json: bool) -> None:
    """One job: status, progress (step, loss, ETA), devices, output."""
    from appliance.train.jobs import job_status

    job = job_status(job_id)

    def render(j) -> None:
        con = console()
        con.print(f"[bold]{j.id}[/bold] {j.status}: {j.method} of {j.model} ({j.recipe}, {j.image})")
        con.print(f"  progress  {_progress_text(j)}")
        con.print(f"  devices   {_devices(j.devices)}")
        con.print(f"  dataset   {j.dataset.path} ({j.dataset.records} {j.dataset.format} records)")
        con.print(f"  created   {_when(j.created_ts)}; started {_when(j.started_ts)}; finished {_when(j.finished_ts)}")
        if j.preempted:
            con.print(f"  preempted {', '.join(p.name for p in j.preempted)} (restore: {j.restore}"
                      + (f", {j.restore_note}" if j.restore_note else "") + ")")
        con.print(f"  output    {j.output_dir}" + (f" -> model {j.output_model}" if j.registered else ""))
        if j.output_files:
            con.print(f"  files     {', '.join(j.output_files[:8])}")
        if j.error:
            con.print(f"  error     {j.error}", soft_wrap=True)
        if j.registered:
            con.print(f"  serve it: appliance serve {j.id}")

    emit(job, as_json, render)


@train.command("logs")
@click.argument("job_id")
@click.option("--tail", "-n", default="all", show_default=True, help="Lines to show ('all' for everything).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines while the job runs.")
def logs(job_id: str, tail: str, follow: bool) -> None:
    """The job container's output (saved when the job ends)."""
    from appliance.train.jobs import job_logs

    write_log_stream(job_logs(job_id, tail=parse_tail(tail, "50"), follow=follow))


@train.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable job record.")
def cancel(job_id: str, as_json: bool) -> None:
    """Stop a pending or running job; the services it preempted come back."""
    from appliance.train.jobs import cancel_job

    job = cancel_job(job_id)
    emit(job, as_json, lambda j: click.echo(
        f"job {j.id} cancelled" + (f"; {j.restore_note}" if j.restore_note else "")))


@click.command("serve")
@click.argument("ref", metavar="JOB_OR_MODEL")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def serve(ref: str, as_json: bool, quiet: bool) -> None:
    """Serve a fine-tuned model (by job id or model id) behind the gateway, beside what runs."""
    from appliance.deploy.requests import serve as serve_model
    from appliance.runtime.converge import ServiceUnhealthy

    try:
        result = serve_model(ref, say=progress_printer(quiet))
    except ServiceUnhealthy as exc:
        click.echo(f"last log lines of {exc.service}:", err=True)
        for line in exc.log_lines or ["(no output)"]:
            click.echo(f"    {line}", err=True)
        raise

    def render(r) -> None:
        if r.already_served:
            click.echo(f"{r.model} is already served by {r.service} (release {r.release})")
        else:
            click.echo(f"{r.model} is served by {r.service} (release {r.release})")
        gateway = r.endpoints.get("gateway")
        if gateway:
            click.echo(f"call it: curl -s {gateway}/chat/completions -H \"Authorization: Bearer $KEY\" "
                       f"-H 'Content-Type: application/json' -d '{{\"model\": \"{r.served_model_name}\", "
                       f"\"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'")

    emit(result, as_json, render)
