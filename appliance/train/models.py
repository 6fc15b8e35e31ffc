"""Pydantic models of fine-tuning jobs: the record in the state, the schedule, command results."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from appliance.planner.models import DeviceRef
from appliance.planner.training import TrainingMemory
from appliance.train.dataset import DatasetSummary

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
ACTIVE: tuple[str, ...] = ("pending", "running")
TERMINAL: tuple[str, ...] = ("completed", "failed", "cancelled")


class Hyper(BaseModel):
    """Training hyper-parameters (the memory estimate uses seq_len, micro_batch, lora_rank)."""

    epochs: int = 3
    learning_rate: float | None = Field(default=None, description="None: the framework's default")
    lora_rank: int = 8
    seq_len: int = 2048
    micro_batch: int = 1
    seed: int = 42
    demo_step_delay_s: float = Field(default=0.0, description="demo trainer only: pause per step (tests, demos)")


class Progress(BaseModel):
    """Parsed from the job container's logs (see appliance.train.progress)."""

    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    epoch: float | None = None
    updated_ts: float | None = None

    @property
    def percent(self) -> float | None:
        if self.step is None or not self.total_steps:
            return None
        return round(100.0 * self.step / self.total_steps, 1)


class PreemptedService(BaseModel):
    """An inference service stopped for a job and started again after it."""

    name: str
    model: str
    devices: list[str] = Field(default_factory=list, description="vendor:index of the devices it runs on")


class DeviceUse(BaseModel):
    device: str = Field(description="vendor:index")
    services: list[str] = Field(default_factory=list, description="inference services planned on it")
    jobs: list[str] = Field(default_factory=list, description="active training jobs on it")

    @property
    def free(self) -> bool:
        return not self.services and not self.jobs


class Schedule(BaseModel):
    """Where a job runs and what has to make room for it."""

    model: str
    method: str
    recipe: str
    backend: str
    image: str
    build: str | None = None
    demo: bool = False
    devices: list[DeviceRef] = Field(default_factory=list, description="empty: the job runs on the CPU")
    memory: TrainingMemory
    usable_mib_per_device: int | None = None
    device_use: list[DeviceUse] = Field(default_factory=list, description="every device of the chosen group")
    inference_plan: str = Field(description="where the serving plan came from: release N, snapshot default plan, ...")
    preempt: list[PreemptedService] = Field(default_factory=list, description="services stopped during the job "
                                            "and restored after it")
    explain: list[str] = Field(default_factory=list)


class Job(BaseModel):
    id: str
    instance: str
    status: JobStatus = "pending"
    model: str
    method: Literal["lora", "full"]
    recipe: str
    backend: str
    image: str
    build: str | None = None
    demo: bool = False
    dataset: DatasetSummary
    hyper: Hyper = Field(default_factory=Hyper)
    devices: list[DeviceRef] = Field(default_factory=list)
    memory_mib_per_device: int | None = None
    preempted: list[PreemptedService] = Field(default_factory=list)
    restore: Literal["none", "pending", "done", "failed"] = "none"
    restore_note: str | None = None
    container_id: str | None = None
    container_name: str | None = None
    job_dir: str
    output_dir: str
    output_model: str = Field(description="catalog id the output is registered as on success")
    registered: bool = False
    artifact: Literal["adapter", "weights"] = "adapter"
    output_files: list[str] = Field(default_factory=list)
    progress: Progress = Field(default_factory=Progress)
    created_ts: float
    started_ts: float | None = None
    finished_ts: float | None = None
    exit_code: int | None = None
    error: str | None = None
    finalized_by: str | None = Field(default=None, description="agent | cli: who observed the end first")

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def device_keys(self) -> list[str]:
        return [f"{d.vendor}:{d.index}" for d in self.devices]


class SubmitResult(BaseModel):
    started: bool
    reason: str = Field(description="why nothing was started (dry run / snapshot), or 'started'")
    dataset: DatasetSummary
    schedule: Schedule
    job: Job | None = None
