"""The catalog's schema: engines, models, apps, training recipes, compatibility, planning knobs.

Every model forbids unknown keys (``extra="forbid"``) so a typo in ``images/catalog/*.yaml``
is an error naming the file, line and dotted path, never a silently ignored setting. The
catalog is data, not code: adding an engine image, a model or an app is a YAML edit
(``docs/catalog.md``). Cross references (an engine naming a precision, an app naming a
model, ...) are checked by :mod:`appliance.catalog.loader` after these models validate.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

Backend = Literal["cuda", "rocm", "cann", "xpu", "dtk", "neuware", "maca", "musa", "corex", "gaudi", "cpu"]
Role = Literal["chat", "embedding", "rerank", "completion"]
CpuArch = Literal["x86_64", "aarch64"]
RankRule = Literal[
    "accelerator", "precision_quality", "precision_speed", "fewer_devices", "more_devices",
    "engine_priority", "newer_image",
]

# Placeholders a start command may use; the planner fills them (docs/catalog.md lists them).
TEMPLATE_FIELDS = frozenset({
    "model_path", "served_model_name", "port", "tp", "context", "context_input", "context_total", "concurrency",
    "mem_fraction", "devices", "threads", "role", "precision",
})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_KEBAB = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_template(args: list[str]) -> list[str]:
    for arg in args:
        for name in _PLACEHOLDER.findall(arg):
            if name not in TEMPLATE_FIELDS:
                raise ValueError(f"unknown placeholder {{{name}}} (known: {', '.join(sorted(TEMPLATE_FIELDS))})")
    return args


class VersionRange(Strict):
    """Inclusive version range; a missing end is unbounded."""

    min: str | None = None
    max: str | None = None


# --------------------------------------------------------------------------- engines


class ImageRecipe(Strict):
    """A serving image built on the box from a vendor base (no registry, no internet): the base
    comes from the bundle, the engine from wheels the bundle carries."""

    base: str = Field(description="the vendor's base image (loaded from the bundle)")
    wheels: list[str] = Field(min_length=1, description="pip requirement specifiers installed from the bundle's "
                              "wheel directory with --no-index")
    tag: str = Field(description="the local tag the built image gets")
    python: str = Field(default="python3", description="the interpreter whose pip installs the wheels (a "
                        "vendor base may keep its framework in a venv)")
    source: str | None = None


class EngineImage(Strict):
    """One published image of an engine, with what it needs from the host."""

    image: str = Field(description="public image reference with its tag")
    version: str = Field(description="engine version inside the image")
    runtime: VersionRange | None = Field(default=None, description="host runtime (CUDA/CANN/ROCm...) range")
    driver_min: str | None = Field(default=None, description="minimum host driver version")
    cpu_arch: list[CpuArch] = Field(default_factory=lambda: ["x86_64"])
    variants: list[str] | None = Field(default=None, description="only for these chip variants (e.g. a3)")
    exclude_architectures: list[str] = Field(default_factory=list,
                                             description="model architectures this (older) image predates")
    source: str | None = Field(default=None, description="where this tag is documented")
    verified: bool = Field(default=True, description="false: tag taken from a single unverified source")
    build: str | None = Field(default=None, description="built locally from this images/ directory (never pulled); "
                              "preferred over the engine's published images")
    probe: Literal["python3", "curl", "http"] | None = Field(
        default=None, description="how the runtime checks its health: python3 or curl inside the container (the "
        "image must ship it), http from outside (the runtime and the agent GET the health path at the container's "
        "address); default python3 for a local build (ours ship it), else http")
    upstream_version: str | None = Field(default=None, description="the upstream engine version a vendor fork is "
                                         "based on: the argument contract is checked against it (default: version)")
    deprecated: str | None = Field(default=None, description="why the publisher deprecated this tag: chosen only "
                                   "when no other image of the engine fits the host")
    serves: bool = Field(default=True, description="false: a vendor base without the engine; needs 'recipe'")
    recipe: ImageRecipe | None = Field(default=None, description="how the serving image is layered on a vendor base "
                                       "offline, from wheels carried in the bundle")

    @model_validator(mode="after")
    def _v_serves(self) -> "EngineImage":
        if not self.serves and self.recipe is None:
            raise ValueError("an image without the engine (serves: false) needs a recipe that layers it")
        return self

    @property
    def contract_version(self) -> str:
        return self.upstream_version or self.version


class EngineConstraints(Strict):
    variants: list[str] | None = Field(default=None, description="chip variants served (910b, a3, 310p); none = any")
    compute_capability: VersionRange | None = None
    cpu_flags: list[str] = Field(default_factory=list, description="CPU features the engine needs")


class PrecisionRequirement(Strict):
    compute_capability: VersionRange | None = None
    variants: list[str] | None = None


class ConfigFile(Strict):
    """A JSON configuration file inside the image that the engine reads instead of flags (MindIE):
    the planner renders ``set`` (dotted keys, template values) into a start script that edits
    it, so the settings are data the argument contract can check."""

    workdir: str = Field(description="directory the engine starts in")
    path: str = Field(description="the file, relative to workdir")
    set: dict[str, str | int | bool | list] = Field(description="dotted key -> value (templates allowed)")
    exec: str = Field(description="the command started after the edit (relative to workdir)")

    @field_validator("set")
    @classmethod
    def _v_set(cls, value: dict) -> dict:
        _check_template([v for v in value.values() if isinstance(v, str)])
        return value


class StartSpec(Strict):
    entrypoint: list[str] = Field(default_factory=list, description="overrides the image entrypoint when set")
    args: list[str] = Field(default_factory=list)
    config: ConfigFile | None = Field(default=None, description="settings written into the engine's config file")
    role_args: dict[Role, list[str]] = Field(default_factory=dict)
    precision_args: dict[str, list[str]] = Field(default_factory=dict)
    trust_remote_code_args: list[str] = Field(default_factory=list, description="added for models that need it")
    env: dict[str, str] = Field(default_factory=dict)
    shared_device_env: dict[str, str] = Field(default_factory=dict, description="added when another service "
                                              "shares one of its devices (MetaX MACA_MPS_MODE)")

    @field_validator("args", "entrypoint")
    @classmethod
    def _v_args(cls, value: list[str]) -> list[str]:
        return _check_template(value)

    @field_validator("role_args", "precision_args")
    @classmethod
    def _v_maps(cls, value: dict) -> dict:
        for args in value.values():
            _check_template(args)
        return value


MULTI_NODE_FIELDS = frozenset({"head_address", "node_rank", "nnodes", "pp", "tp", "world_size", "node_ip",
                               "devices_per_node", "runtime_port", "dist_port"})
_MN_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def _check_mn_template(args: list[str]) -> list[str]:
    for arg in args:
        for name in _MN_PLACEHOLDER.findall(arg):
            if name not in MULTI_NODE_FIELDS and name not in TEMPLATE_FIELDS:
                raise ValueError(f"unknown placeholder {{{name}}} (known: "
                                 f"{', '.join(sorted(MULTI_NODE_FIELDS | set(TEMPLATE_FIELDS)))})")
    return args


class MultiNode(Strict):
    """How an engine serves one model across nodes, as its documentation describes it.

    ``ray-pipeline`` (vLLM, vllm-ascend): a Ray cluster first -- ``ray start --head`` on the
    first node, ``ray start --address`` on the others -- then the engine's own launcher on the
    head with tensor parallel = the devices of one node and pipeline parallel = the nodes.
    ``native-tp`` (SGLang): the same launcher on every node with the total tensor parallel,
    ``--nnodes``, ``--node-rank`` and the head's ``--dist-init-addr``.
    """

    mode: Literal["ray-pipeline", "native-tp"]
    max_nodes: int = Field(default=4, ge=2)
    runtime_port: int | None = Field(default=None, ge=1, le=65535, description="the Ray head's GCS port")
    dist_port: int | None = Field(default=None, ge=1, le=65535, description="the engine's own rendezvous port")
    head_start: list[str] = Field(default_factory=list, description="the runtime head (ray start --head ...)")
    worker_start: list[str] = Field(default_factory=list, description="a runtime worker, or the engine on a "
                                    "worker node (native-tp)")
    launcher_args: list[str] = Field(default_factory=list, description="added to the engine's start arguments "
                                     "on the head")
    env: dict[str, str] = Field(default_factory=dict, description="on every node's containers")
    needs_rdma: bool = Field(default=True, description="RDMA/RoCE NICs on every node (preflight)")
    source: str

    @field_validator("head_start", "worker_start", "launcher_args")
    @classmethod
    def _v_args(cls, value: list[str]) -> list[str]:
        return _check_mn_template(value)


class WeightsConversion(Strict):
    """Weights an engine cannot read as published (vllm_musa): converted once per model,
    precision and tensor-parallel degree with the engine's own tool, in its own image, before the
    service starts; the service is pointed at the result (appliance.deploy.convert)."""

    tool: str = Field(description="the vendor's converter, for messages")
    entrypoint: list[str]
    args: list[str] = Field(description="templates: {source_path} (the store's weights), {output_path}, {tp}")
    timeout_s: float = Field(default=3600.0, gt=0)
    source: str

    @field_validator("args", "entrypoint")
    @classmethod
    def _v_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            for name in _PLACEHOLDER.findall(arg):
                if name not in {"source_path", "output_path", "tp"}:
                    raise ValueError(f"unknown placeholder {{{name}}} (known: output_path, source_path, tp)")
        return value


class EngineMemory(Strict):
    overhead_mib: int = Field(ge=0, description="per device: runtime context, activations, graphs")


class Engine(Strict):
    name: str
    service: Literal["vllm", "sglang", "tensorrt-llm", "mindie", "tgi", "llama.cpp", "demo"]
    backend: Backend
    images: list[EngineImage] = Field(min_length=1)
    constraints: EngineConstraints = Field(default_factory=EngineConstraints)
    architectures: list[str] = Field(min_length=1)
    roles: list[Role] = Field(min_length=1)
    precisions: list[str] = Field(min_length=1)
    precision_requirements: dict[str, PrecisionRequirement] = Field(default_factory=dict)
    tensor_parallel: list[int] = Field(default_factory=lambda: [1])
    exclusive_devices: bool = Field(default=False, description="cannot share a device with another service")
    served_name: Literal["arg", "path"] = Field(default="arg",
                                                description="'path': the API serves the model under its path")
    port: int = Field(ge=1, le=65535)
    health: str = "/health"
    api: Literal["openai"] = "openai"
    start: StartSpec
    memory: EngineMemory
    priority: int = Field(default=50, description="tie-break between engines (higher first)")
    models: list[str] | None = Field(default=None, description="serve only these models (demo engine)")
    demo: bool = False
    build: str | None = Field(default=None, description="local build context (built by the runtime, never pulled)")
    weights_conversion: WeightsConversion | None = Field(default=None, description="the engine serves converted "
                                                         "weights only (made on the node before it starts)")
    multi_node: MultiNode | None = Field(default=None, description="serves one model across nodes (cluster plans)")
    notes: str | None = None

    @field_validator("tensor_parallel")
    @classmethod
    def _v_tp(cls, value: list[int]) -> list[int]:
        if not value or any(v < 1 for v in value):
            raise ValueError("tensor_parallel must list degrees >= 1")
        return sorted(set(value))

    @field_validator("health")
    @classmethod
    def _v_health(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("health path must start with '/'")
        return value


# --------------------------------------------------------------------------- models


class Experts(Strict):
    total: int = Field(ge=1)
    active: int = Field(ge=1)
    shared: int = 0


class Mla(Strict):
    """Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds one latent per token."""

    kv_lora_rank: int
    qk_rope_head_dim: int


class ModelVariant(Strict):
    precision: str
    source: str | None = Field(default=None, description="public weights (Hugging Face repo), or "
                               "'package:<name>' for a Python package that ships them")
    file: str | None = Field(default=None, description="file inside the repo (GGUF)")
    size_bytes: int | None = Field(default=None, gt=0, description="size of that file, when it is known exactly")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                               description="sha256 of that file: an import of it must match")
    engines: list[str] | None = Field(default=None, description="only these engines")


class FineTune(Strict):
    """Where a locally fine-tuned model came from. Written by ``appliance train`` into the local
    overlay (``<data_dir>/catalog/``), never shipped: the planner serves such a model with the
    engines of its base model (see appliance.train.register)."""

    base_model: str
    method: Literal["lora", "full"]
    artifact: Literal["adapter", "weights"] = Field(description="adapter: LoRA adapter files; weights: full weights")
    job: str
    recipe: str
    output: str = Field(description="host directory of the job's output")
    created: str | None = None


class Model(Strict):
    name: str
    family: str
    role: Role
    architecture: str
    license: str
    closed: bool = False
    params: int = Field(gt=0, description="total parameters (all experts)")
    active_params: int | None = None
    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    intermediate_size: int | None = None
    attention_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    trust_remote_code: bool = False
    max_context: int = Field(gt=0)
    experts: Experts | None = None
    mla: Mla | None = None
    variants: list[ModelVariant] = Field(min_length=1)
    quality: int = Field(default=50, description="rank for the default set (higher is better)")
    default: bool = Field(default=True, description="may be chosen for the out-of-the-box set")
    tags: list[str] = Field(default_factory=list)
    demo: bool = Field(default=False, description="a templated test model without weights (test fixtures only)")
    builtin: bool = Field(default=False, description="a built-in evaluation model: a Python package ships its "
                          "weights; `appliance init --demo` plans the built-in set")
    relevance_threshold: float | None = Field(default=None, ge=-1, le=1,
                                              description="embedding models: the cosine below which a passage does "
                                              "not answer a query (retrieval apps refuse instead)")
    config_source: str | None = Field(default=None, description="where the numbers come from")
    fine_tune: FineTune | None = Field(default=None, description="set for models fine-tuned on this node "
                                       "(local overlay, appliance train)")

    @model_validator(mode="after")
    def _v_heads(self) -> "Model":
        if self.attention_heads % self.kv_heads:
            raise ValueError(f"attention_heads {self.attention_heads} is not a multiple of kv_heads {self.kv_heads}")
        return self

    def variant(self, precision: str) -> ModelVariant | None:
        for v in self.variants:
            if v.precision == precision:
                return v
        return None


class Precision(Strict):
    bytes_per_param: float = Field(gt=0)
    embedding_bytes_per_param: float = Field(default=2.0, gt=0)
    quality: int = Field(description="higher = closer to the original weights")
    speed: int = Field(description="higher = more tokens/s at high concurrency")
    derived_from: str | None = Field(default=None, description="same weights, cast at load time")


# --------------------------------------------------------------------------- apps, training, compat


class AppRole(Strict):
    role: Role
    required: bool = True


class App(Strict):
    """A sample app and how the runtime wires it (the one source of truth for that wiring)."""

    name: str = Field(description="title shown on the app's page")
    description: str
    image: str
    build: str | None = None
    port: int = Field(ge=1, le=65535, description="default host port the app is published on "
                      "(the site configuration's app_port_base overrides it)")
    listen_port: int = Field(default=8080, ge=1, le=65535, description="port the app listens on in its container")
    health: str = "/healthz"
    roles: list[AppRole] = Field(min_length=1)
    prefer_tags: list[str] = Field(default_factory=list, description="prefer chat models with these tags")
    data_volume: bool = Field(default=False, description="keeps data (a volume at /data)")
    key_rpm: int | None = Field(default=None, ge=1, description="request-rate limit of the app's own API key")
    env: dict[str, str] = Field(default_factory=dict)


class PlatformImage(Strict):
    image: str
    build: str | None = None
    port: int = Field(ge=1, le=65535, description="port it listens on in its container")
    health: str = "/healthz"


class Platform(Strict):
    gateway: PlatformImage


class TrainingMemoryRule(Strict):
    """Per-device training memory (see appliance.planner.training for the formula)."""

    weights_bytes_per_param: float = 2.0
    state_bytes_per_trainable_param: float = 16.0
    shard_states: bool = Field(description="ZeRO-3 style: states and weights split across devices")
    activation_checkpointing: bool = True
    overhead_mib: int = 2048


class TrainingRecipe(Strict):
    name: str
    method: Literal["lora", "full"]
    backend: Backend
    framework: Literal["llama-factory", "mindspeed-llm", "demo"]
    image: str
    build: str | None = None
    demo: bool = False
    entrypoint: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    memory: TrainingMemoryRule
    models: list[str] | None = Field(default=None, description="only these models (demo trainer)")
    source: str | None = None


class RuntimeForDriver(Strict):
    driver_min: str
    runtime: str


class BackendCompat(Strict):
    """What the catalog's images need from a host of this backend (read by preflight)."""

    runtime_name: str
    driver_min: str | None = None
    runtime: VersionRange = Field(default_factory=VersionRange)
    recommended_runtime: str | None = Field(default=None, description="what provisioning installs")
    driver_runtime: list[RuntimeForDriver] = Field(
        default_factory=list, description="newest runtime a driver supports (CUDA), newest first")
    notes: str | None = None


class Profile(Strict):
    description: str
    context_tokens: int = Field(gt=0)
    concurrency: int = Field(gt=0)
    rank: list[RankRule] = Field(min_length=1)
    engine_priority: dict[str, int] = Field(default_factory=dict, description="per-engine priority overrides")


class PlannerSettings(Strict):
    device_memory_utilization: float = Field(gt=0, le=1)
    cpu_memory_fraction: float = Field(gt=0, le=1)
    kv_cache_bytes: int = 2
    base_port: int = 8000
    default_roles: list[Role] = Field(default_factory=lambda: ["chat", "embedding"])
    cpu_fallback_roles: list[Role] = Field(default_factory=lambda: ["embedding", "rerank"])
    cpu_default_max_params: int = Field(description="largest chat model chosen by default on a CPU-only node")
    models_dir: str | None = Field(default=None, description="host directory of weights (default <data_dir>/models)")
    search_budget: int = 20000


# --------------------------------------------------------------------------- argument contracts


class FlagRule(Strict):
    """Which versions of an engine accept a flag, and from where that is known.

    ``since`` is the first version that accepts it, ``removed`` the first that refuses it (so
    the accepted range is ``[since, removed)``), ``deprecated`` the first that warns.
    """

    since: str | None = None
    deprecated: str | None = None
    removed: str | None = None
    replaced_by: str | None = None
    value: bool = Field(default=True, description="false: a switch without a value")
    source: str | None = None


class VersionedArgs(Strict):
    """Arguments the planner adds for a role on engine versions in ``[since, until)``."""

    since: str | None = None
    until: str | None = None
    args: list[str]
    source: str | None = None

    @field_validator("args")
    @classmethod
    def _v_args(cls, value: list[str]) -> list[str]:
        return _check_template(value)


ContractRuleKind = Literal["flag_equals", "flag_less_than", "flag_at_least", "entrypoint", "config_set",
                           "config_same", "env_when_shared"]


class ContractRule(Strict):
    """A companion rule every planned command of the engine must meet (appliance.catalog.contract)."""

    kind: ContractRuleKind
    why: str
    source: str
    since: str | None = None
    until: str | None = None
    roles: list[Role] | None = Field(default=None, description="only for services of these roles")
    backends: list[Backend] | None = Field(default=None, description="only for engines of these backends "
                                           "(a vendor fork's own rule)")
    flag: str | None = None
    equals: str | None = None
    than: str | None = None
    field: Literal["context", "context_total", "concurrency", "tp"] | None = None
    entrypoint: list[str] | None = None
    config: dict[str, str | int | bool] = Field(default_factory=dict)
    when: dict[str, str | int | bool] = Field(default_factory=dict)
    keys: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _v_kind(self) -> "ContractRule":
        need = {"flag_equals": ("flag", "equals"), "flag_less_than": ("flag", "than"),
                "flag_at_least": ("flag", "field"), "entrypoint": ("entrypoint",), "config_set": ("config",),
                "config_same": ("keys",), "env_when_shared": ("env",)}[self.kind]
        missing = [n for n in need if not getattr(self, n)]
        if missing:
            raise ValueError(f"a {self.kind} rule needs {', '.join(missing)}")
        return self


class EngineContract(Strict):
    """What one engine (service) accepts, by version: flags, role arguments and companion rules.

    The planner takes role arguments from here for the image's version, and
    :func:`appliance.catalog.contract.check` holds every planned command to it.
    """

    name: str
    source: str
    command: Literal["flags", "config"] = Field(default="flags", description="config: the engine reads a config "
                                                "file (MindIE); its flags are not checked, its settings are")
    positional: int = Field(default=0, ge=0, description="leading positional arguments (trtllm-serve's model)")
    flags: dict[str, FlagRule] = Field(default_factory=dict)
    role_args: dict[Role, list[VersionedArgs]] = Field(default_factory=dict)
    rules: list[ContractRule] = Field(default_factory=list)


class CatalogFile(Strict):
    """One YAML file: any of the sections; files are merged, ids must be unique."""

    schema_version: Literal[1]
    release: str | None = None
    planner: PlannerSettings | None = None
    profiles: dict[str, Profile] = Field(default_factory=dict)
    precisions: dict[str, Precision] = Field(default_factory=dict)
    compat: dict[Backend, BackendCompat] = Field(default_factory=dict)
    platform: Platform | None = None
    engines: dict[str, Engine] = Field(default_factory=dict)
    models: dict[str, Model] = Field(default_factory=dict)
    apps: dict[str, App] = Field(default_factory=dict)
    training: dict[str, TrainingRecipe] = Field(default_factory=dict)
    contracts: dict[str, EngineContract] = Field(default_factory=dict)

    @field_validator("engines", "models", "apps", "training", "profiles")
    @classmethod
    def _v_ids(cls, value: dict) -> dict:
        for key in value:
            if not _KEBAB.match(key):
                raise ValueError(f"id {key!r} must be lower-case kebab form (a-z, 0-9, '-', '.')")
        return value


class Catalog(BaseModel):
    """The merged, cross-checked catalog the planner reads."""

    model_config = ConfigDict(frozen=True)

    release: str
    version: str = Field(description="release + content hash of the files")
    files: list[str]
    planner: PlannerSettings
    profiles: dict[str, Profile]
    precisions: dict[str, Precision]
    compat: dict[str, BackendCompat]
    platform: Platform
    engines: dict[str, Engine]
    models: dict[str, Model]
    apps: dict[str, App]
    training: dict[str, TrainingRecipe]
    contracts: dict[str, EngineContract] = Field(default_factory=dict)

    def compat_for(self, backend: str) -> BackendCompat | None:
        """Driver minimum and runtime range the catalog's images need on a ``backend`` host."""
        return self.compat.get(backend)

    def model(self, model_id: str) -> Model:
        from appliance.catalog.loader import unknown_name_error

        if model_id not in self.models:
            raise unknown_name_error("model", model_id, self.models, where="--models")
        return self.models[model_id]

    def precisions_of(self, model: Model) -> list[tuple[str, ModelVariant]]:
        """The model's variants plus the precisions derived from them (fp16 from bf16)."""
        out: list[tuple[str, ModelVariant]] = [(v.precision, v) for v in model.variants]
        have = {p for p, _ in out}
        for name, prec in sorted(self.precisions.items()):
            if prec.derived_from and name not in have:
                base = model.variant(prec.derived_from)
                if base is not None:
                    out.append((name, base))
        return out
