"""The typed request every deploy starts from, and the result it returns.

``init``, ``upgrade``, ``rollback`` and ``serve`` differ only in the :class:`DeployRequest`
they build (see :mod:`appliance.deploy.requests`); :func:`appliance.deploy.pipeline.run` is the
one implementation of the steps.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from appliance.bundle.apply import DiskCheck, RecoveryResult
from appliance.deploy.site import SiteConfig
from appliance.planner.models import Plan
from appliance.runtime.models import Change, StackSpec

Kind = Literal["init", "upgrade", "rollback", "serve"]


class DeployRequest(BaseModel):
    """What to deploy and how. Built by the CLI (or a library caller), never edited by the steps."""

    kind: Kind
    site: SiteConfig = Field(description="the site configuration to deploy with (recorded on success)")
    site_changes: list[str] = Field(default_factory=list,
                                    description="what this request changes in the recorded configuration")
    bundle: str | None = Field(default=None, description="an offline bundle to install (upgrade, init --bundle)")
    pubkey: str | None = Field(default=None, description="trust this key instead of the node's trusted keys")
    allow_downgrade: bool = False
    target_release: int | None = Field(default=None, description="rollback: the release to return to")
    dry_run: bool = False
    force: bool = Field(default=False, description="go on when a preflight rule fails")
    create_only: bool = Field(default=False, description="create the containers, start nothing, record nothing")
    snapshot: str | None = Field(default=None, description="plan for a node snapshot (dry runs, create-only)")
    extra_models: list[str] = Field(default_factory=list,
                                    description="serve: models added to the chosen ones for this deploy")

    @property
    def mutating(self) -> bool:
        return not (self.dry_run or self.create_only)


class StepTiming(BaseModel):
    name: str
    seconds: float
    waiting_s: float = 0.0
    detail: str = ""


class DeployResult(BaseModel):
    """What a deploy did (or, with ``dry_run``, would do). Rendered by the CLI; ``--json`` prints it."""

    ok: bool = True
    kind: str = Field(description="init | install (first install from a bundle) | upgrade | rollback | serve")
    dry_run: bool = False
    instance: str
    release: int | None = None
    previous_release: int | None = None
    from_version: str | None = None
    to_version: str | None = None
    plan: Plan | None = None
    stack: StackSpec | None = None
    changes: list[Change] = Field(default_factory=list)
    phases: list[StepTiming] = Field(default_factory=list, description="the steps with their timings")
    endpoints: dict[str, str] = Field(default_factory=dict)
    preflight: list[dict] = Field(default_factory=list)
    site_changes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    next_steps: list[str] = Field(default_factory=list)
    tls: dict | None = Field(default=None, description="the certificate the gateway and apps serve: "
                             "fingerprint_sha256, self_signed, created, cert_path (None: plain HTTP)")
    recovered: RecoveryResult | None = None
    disk: DiskCheck | None = None
    staged_bytes: int = 0
    reused_bytes: int = 0
    loaded_images: list[str] = Field(default_factory=list)
    pruned_images: list[str] = Field(default_factory=list)
    cleanup: list[str] = Field(default_factory=list)
    message: str = ""
    # serve
    model: str | None = None
    service: str | None = None
    served_model_name: str | None = None
    already_served: bool = False
