"""The ansible-runner adapter: the only place appliance runs Ansible.

Why ansible-runner rather than a home-made subprocess: it gives a private data directory per
run (inventory, extra vars, environment) and a structured event stream (one JSON event per
task result) that we turn into live progress and a :class:`ProvisionReport`; and it keeps
each run's artifacts (stdout, every event, the exit code) for support. Ansible itself is the
multi-host engine: several nodes come from an Ansible inventory file, never from our own
SSH fan-out.

``ansible_runner`` is imported inside :func:`run_playbook` only, so nothing else pays for it.
"""

from __future__ import annotations

import difflib
import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from appliance.atomic import write_atomic
from appliance.errors import ProvisionError
from appliance.provision.models import HostSummary, ProvisionReport, TaskResult

# progress(kind, data): kind is "task" (a task started: data = {"task", "role"}),
# "result" (data = TaskResult) or "stats" (data = list[HostSummary]).
Progress = Callable[[str, Any], None]

KEEP_RUNS = 30          # run directories kept under <data dir>/ansible (oldest pruned)
MAX_DIFF_CHARS = 6000


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def runs_dir() -> Path:
    from appliance.paths import data_dir

    return data_dir() / "ansible"


def ansible_env(run_dir: Path, playbook_dir: Path) -> dict[str, str]:
    """Environment for ansible-playbook: fast, quiet, deterministic, and private to this run."""
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    return {
        # the ansible-playbook next to our interpreter first (a venv need not be activated)
        "PATH": f"{bindir}{os.pathsep}{path}" if bindir not in path.split(os.pathsep) else path,
        "ANSIBLE_ROLES_PATH": str(playbook_dir / "roles"),
        "ANSIBLE_LIBRARY": str(playbook_dir / "library"),
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_SYSTEM_WARNINGS": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(run_dir / "tmp"),
        "ANSIBLE_INTERPRETER_PYTHON": "auto_silent",
        # a broken inventory is an error, not an empty (and "successful") run
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
    }


def _unified(diff: Any) -> str | None:
    """Ansible's diff result (dict or list of dicts) as one unified diff text."""
    items = diff if isinstance(diff, list) else [diff] if isinstance(diff, dict) else []
    out: list[str] = []
    for d in items:
        if not isinstance(d, dict):
            continue
        if d.get("prepared"):
            out.append(str(d["prepared"]))
            continue
        before, after = d.get("before"), d.get("after")
        if before is None and after is None:
            continue
        if isinstance(before, (dict, list)) or isinstance(after, (dict, list)):
            before = json.dumps(before, indent=2, sort_keys=True) + "\n" if before is not None else ""
            after = json.dumps(after, indent=2, sort_keys=True) + "\n" if after is not None else ""
        before, after = str(before or ""), str(after or "")
        if before == after:
            continue
        out.extend(difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True),
            fromfile=str(d.get("before_header") or "before"), tofile=str(d.get("after_header") or "after")))
    text = "".join(out)
    if not text:
        return None
    return text if len(text) <= MAX_DIFF_CHARS else text[:MAX_DIFF_CHARS] + "\n... (diff truncated)\n"


def _message(res: dict) -> str | None:
    """The most useful one-paragraph message of a task result (loops: the failing item)."""
    if not isinstance(res, dict):
        return None
    if res.get("results") and isinstance(res["results"], list):
        for item in res["results"]:
            if isinstance(item, dict) and item.get("failed"):
                return _message(item)
    msg = res.get("msg")
    if res.get("stderr") and (not msg or msg == "non-zero return code"):
        msg = f"{msg + ': ' if msg else ''}{str(res['stderr']).strip()[-500:]}"
    if msg is None:
        return None
    return " ".join(str(msg).split())


class _EventCollector:
    """Turns ansible-runner events into TaskResults and host stats, calling ``progress``."""

    def __init__(self, progress: Progress | None, started: float):
        self.progress = progress
        self.started = started
        self.first_task_s: float | None = None
        self.tasks: list[TaskResult] = []
        self.stats: list[HostSummary] = []

    def __call__(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            if self.first_task_s is None:
                self.first_task_s = time.monotonic() - self.started
            if self.progress:
                self.progress("task", {"task": data.get("task"), "role": data.get("role")})
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"):
            self._result(kind, data)
        elif kind == "playbook_on_stats":
            self._stats(data)
        return True  # keep every event in the artifacts

    def _result(self, kind: str, data: dict) -> None:
        res = data.get("res") or {}
        status = {"runner_on_ok": "changed" if res.get("changed") else "ok",
                  "runner_on_failed": "failed", "runner_on_skipped": "skipped",
                  "runner_on_unreachable": "unreachable"}[kind]
        ignored = bool(kind == "runner_on_failed" and data.get("ignore_errors"))
        task = data.get("task") or data.get("task_action") or "?"
        role = data.get("role") or None
        # our task names carry their role ("Base | ...", "Packages | ... | nvidia driver");
        # prefix only foreign ones
        label = task if (not role or " | " in task) else f"{role} : {task}"
        message = _message(res) if status in ("failed", "unreachable") or data.get("task_action") in (
            "debug", "ansible.builtin.debug") else None
        diff = None
        if res.get("diff"):
            diff = _unified(res["diff"])
        elif isinstance(res.get("results"), list):
            diff = "".join(_unified(r.get("diff")) or "" for r in res["results"] if isinstance(r, dict)) or None
        result = TaskResult(host=str(data.get("host", "?")), task=label, role=role,
                            action=data.get("resolved_action") or data.get("task_action"),
                            status=status, message=message, diff=diff, ignored=ignored)
        self.tasks.append(result)
        if self.progress:
            self.progress("result", result)

    def _stats(self, data: dict) -> None:
        hosts = set()
        for key in ("ok", "changed", "failures", "skipped", "dark", "ignored", "rescued", "processed"):
            hosts |= set((data.get(key) or {}).keys())
        self.stats = [HostSummary(
            host=h, ok=(data.get("ok") or {}).get(h, 0), changed=(data.get("changed") or {}).get(h, 0),
            failed=(data.get("failures") or {}).get(h, 0), skipped=(data.get("skipped") or {}).get(h, 0),
            unreachable=(data.get("dark") or {}).get(h, 0), ignored=(data.get("ignored") or {}).get(h, 0),
            rescued=(data.get("rescued") or {}).get(h, 0)) for h in sorted(hosts)]
        if self.progress:
            self.progress("stats", self.stats)


def run_playbook(*, inventory_file: str | Path, extravars: dict, run_id: str | None = None,
                 playbook: str | Path | None = None, check: bool = False, tags: list[str] | None = None,
                 skip_tags: list[str] | None = None, limit: str | None = None,
                 progress: Progress | None = None, timeout_s: int | None = None) -> ProvisionReport:
    """Run ``playbook`` (default: the shipped ``site.yml``) through ansible-runner.

    Returns a report whatever the outcome (``status`` says); the caller decides whether a
    failure is fatal (:meth:`ProvisionReport.raise_for_failure`). The run's private data dir
    is ``<data dir>/ansible/<run id>/`` and is kept, with ansible-runner's artifacts and our
    ``report.json``.
    """
    import ansible_runner
    import ansible_runner.exceptions

    from appliance.paths import playbooks_dir

    run_id = run_id or new_run_id()
    run_dir = runs_dir() / run_id
    (run_dir / "tmp").mkdir(parents=True, exist_ok=True)
    book = Path(playbook) if playbook else playbooks_dir() / "site.yml"
    project = book.parent if book.is_absolute() else playbooks_dir()
    cmdline = ["--check", "--diff"] if check else ["--diff"]
    started = time.monotonic()
    collector = _EventCollector(progress, started)
    try:
        runner = _run(ansible_runner, run_dir, project, book, inventory_file, extravars, cmdline, tags, skip_tags,
                      limit, collector, timeout_s)
    except (OSError, ansible_runner.exceptions.AnsibleRunnerException) as exc:
        raise ProvisionError(f"ansible-runner could not run the playbook: {type(exc).__name__}: {exc}",
                             where=f"provision run {run_id}",
                             fix="check that ansible-core is installed (ansible-playbook on PATH); "
                                 f"artifacts: {run_dir}") \
            from None
    return _report(runner, collector, run_id, run_dir, started, check, tags, inventory_file)


def _run(ansible_runner, run_dir: Path, project: Path, book: Path, inventory_file, extravars: dict, cmdline: list[str],
         tags, skip_tags, limit, collector, timeout_s):
    """The one call into ansible-runner."""
    return ansible_runner.run(
        private_data_dir=str(run_dir),
        ident="run",
        project_dir=str(project),
        playbook=book.name,
        inventory=str(Path(inventory_file).resolve()),
        extravars=extravars,
        envvars=ansible_env(run_dir, project),
        cmdline=" ".join(cmdline),
        tags=",".join(tags) if tags else None,
        skip_tags=",".join(skip_tags) if skip_tags else None,
        limit=limit,
        quiet=True,
        event_handler=collector,
        timeout=timeout_s,
        suppress_env_files=False,
    )


def _report(runner, collector, run_id: str, run_dir: Path, started: float, check: bool, tags, inventory_file):
    seconds = time.monotonic() - started
    artifacts = run_dir / "artifacts" / "run"
    failures = [t for t in collector.tasks if t.status in ("failed", "unreachable") and not t.ignored]
    ok = runner.status == "successful" and runner.rc == 0 and not failures and bool(collector.stats)
    error = None
    if not ok and not failures:
        error = _stdout_error(artifacts) or (
            f"ansible-playbook ended with status {runner.status}, rc {runner.rc}" if runner.rc
            else "no host of the inventory matched (check the inventory file and --limit)")
    report = ProvisionReport(
        run_id=run_id, status="successful" if ok else "failed", rc=runner.rc, check=check,
        tags=list(tags or []), inventory=str(inventory_file), artifacts_dir=str(artifacts),
        seconds=round(seconds, 3),
        startup_s=round(collector.first_task_s, 3) if collector.first_task_s is not None else None,
        hosts=collector.stats, tasks=collector.tasks, failures=failures, error=error)
    write_atomic(run_dir / "report.json", report.model_dump_json(indent=2) + "\n", fsync=False)
    shutil.rmtree(run_dir / "tmp", ignore_errors=True)
    _prune(run_dir.parent, keep=KEEP_RUNS)
    return report


def _stdout_error(artifacts: Path) -> str | None:
    """The error of ansible-playbook's output (syntax, inventory, missing role), with its cause."""
    try:
        text = (artifacts / "stdout").read_text(errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "ERROR!" in line or line.startswith("[ERROR]"):
            message = " ".join(lines[i:i + 3])
            if "inventory" in line:
                cause = next((ln.split("]:", 1)[-1].strip() for ln in lines
                              if ln.startswith("[WARNING]: Failed to parse")), None)
                if cause:
                    message = f"{line} ({cause})"
            return message[:600]
    return " ".join(lines[-3:])[:600] if lines else None


def _prune(parent: Path, keep: int) -> None:
    """Keep the newest ``keep`` run directories (names sort by time)."""
    try:
        runs = sorted(p for p in parent.iterdir() if p.is_dir())
    except OSError:
        return
    for old in runs[:-keep] if len(runs) > keep else []:
        shutil.rmtree(old, ignore_errors=True)
