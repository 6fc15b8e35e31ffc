"""Pydantic models of provisioning results: a playbook run and a preflight report.

Both are what the library returns and what ``--json`` prints; the CLI only renders them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

TaskStatus = Literal["ok", "changed", "failed", "skipped", "unreachable"]
RuleStatus = Literal["pass", "warn", "fail", "skip"]


class TaskResult(BaseModel):
    """One task on one host, from ansible-runner's event stream."""

    host: str
    task: str
    role: str | None = None
    action: str | None = None
    status: TaskStatus
    message: str | None = Field(default=None, description="the module's msg (failures, debug output)")
    diff: str | None = Field(default=None, description="unified diff (check/diff mode)")
    ignored: bool = Field(default=False, description="failed but ignore_errors was set")


class HostSummary(BaseModel):
    """Per-host totals, from the playbook's final stats (Ansible's PLAY RECAP)."""

    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    ignored: int = 0
    rescued: int = 0


class ProvisionReport(BaseModel):
    """The outcome of one ``appliance provision`` run."""

    run_id: str
    status: Literal["successful", "failed"]
    rc: int | None = None
    check: bool = False
    tags: list[str] = Field(default_factory=list)
    inventory: str = Field(description="the Ansible inventory file used")
    artifacts_dir: str = Field(description="ansible-runner's artifacts of this run (kept)")
    seconds: float = 0.0
    startup_s: float | None = Field(default=None, description="time until Ansible started the first task")
    hosts: list[HostSummary] = Field(default_factory=list)
    tasks: list[TaskResult] = Field(default_factory=list)
    failures: list[TaskResult] = Field(default_factory=list)
    error: str | None = Field(default=None, description="why Ansible stopped when no task failed (syntax, inventory)")

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts)

    def host(self, name: str) -> HostSummary | None:
        return next((h for h in self.hosts if h.host == name), None)

    def failure_block(self) -> str:
        """The one clear block shown when the run failed: host, task, message, artifacts."""
        lines = ["provisioning failed"]
        for f in self.failures or []:
            lines += [f"  host:    {f.host}", f"  task:    {f.task}", f"  message: {f.message or '(no message)'}"]
        if not self.failures and self.error:
            lines.append(f"  error:   {self.error}")
        lines.append(f"  artifacts: {self.artifacts_dir}")
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        """Raise ProvisionError (exit 1) naming the first failing host and task."""
        from appliance.errors import ProvisionError

        if self.status == "successful":
            return
        if self.failures:
            first = self.failures[0]
            more = f" (+{len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            raise ProvisionError(f"task '{first.task}' failed: {first.message or 'no message'}{more}",
                                 where=f"provision: host {first.host}",
                                 fix=f"fix the cause and re-run; this run's artifacts are in {self.artifacts_dir}")
        raise ProvisionError(self.error or f"ansible-playbook exited {self.rc}", where="provision",
                             fix=f"see the run's artifacts in {self.artifacts_dir}")


class RuleResult(BaseModel):
    """One preflight rule's outcome."""

    id: str
    title: str
    status: RuleStatus
    message: str
    fix: str | None = None
    details: dict = Field(default_factory=dict)


class PreflightReport(BaseModel):
    """Ordered rule results; ``status`` is the worst of them. Exit: 0 pass, 4 warn, 3 fail."""

    host: str = Field(description="'live', 'root:<dir>' or 'snapshot:<dir>'")
    status: Literal["pass", "warn", "fail"]
    exit_code: int
    rules: list[RuleResult]

    def rule(self, rule_id: str) -> RuleResult:
        return next(r for r in self.rules if r.id == rule_id)

    def raise_for_failure(self) -> None:
        """For ``init``/``upgrade``: stop (PreflightFailed, exit 3) when any rule failed."""
        from appliance.errors import PreflightFailed

        failed = [r for r in self.rules if r.status == "fail"]
        if failed:
            first = failed[0]
            more = f" (+{len(failed) - 1} more failing rule(s): run `appliance preflight`)" if len(failed) > 1 else ""
            raise PreflightFailed(f"{first.message}{more}", where=f"preflight {first.id}", fix=first.fix)
