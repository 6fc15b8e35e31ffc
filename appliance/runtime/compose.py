"""Stack composition: (plan, catalog, inventory, settings) -> StackSpec.

The plan decides engines, images and devices; composition only turns each decision into
container settings and adds what every stack has: the gateway (one OpenAI-compatible
endpoint, the only published inference port) and the sample apps from the catalog, each
wired to the gateway with its own key. It is a pure function -- no Docker, no files
written -- so ``init --dry-run`` and the tests see exactly what would be created.

Device exposure comes from the chip driver (``container_access``); never privileged.

Isolation (docs/security.md "Isolation and least privilege"): the engines are on the stack's
internal engine network only, never publish a port, and each requires its own secret (mounted
read-only at :data:`ENGINE_SECRETS_TARGET`, passed as its engine takes it:
:data:`appliance.catalog.contract.KEY_INPUTS`); the apps are on the front network only; the
gateway is on both, the one bridge. Every container of our images runs as its role's account
(:mod:`appliance.runtime.pyrt`), read-only, with every capability dropped and pids and memory
bounded; vendor engine images keep their own user (their device runtimes need root).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.errors import RuntimeFailure
from appliance.inventory.models import Accelerator, Inventory
from appliance.paths import data_dir, images_dir
from appliance.planner.models import DeviceRef, HealthCheck, Plan, PlannedService
from appliance.runtime import labels as L
from appliance.runtime import pyrt
from appliance.runtime.models import Bind, HealthSpec, ServiceSpec, Settings, StackSpec
from appliance.runtime.ownership import container_user

GATEWAY = "gateway"
GATEWAY_PIDS_LIMIT = 512     # asyncio: an event loop, a watcher, a small sign-in pool (images/gateway)
# The container contract of the locally built gateway and apps (where the runtime mounts what).
GATEWAY_CONFIG_TARGET = "/etc/appliance/gateway"
UPSTREAM_KEYS_FILENAME = "upstream_keys.json"    # in the gateway's config dir: service -> engine secret
UPSTREAM_KEYS_FORMAT = "appliance-upstream-keys/1"
APP_SECRETS_TARGET = "/run/appliance"
APP_KEY_FILENAME = "api_key"
APP_DATA_TARGET = "/data"
# Where an engine finds its secret: a directory bound read-only (a replaced file is seen in it).
ENGINE_SECRETS_TARGET = "/run/appliance-engine"
# TLS (settings.tls): the box's certificate directory (<data>/tls, appliance.deploy.tls), read-only;
# its key file is group-readable by TLS_GID, which the gateway and apps get as a supplementary group
TLS_TARGET = "/run/appliance-tls"
TLS_GID = 65529
# with TLS the gateway also listens in plain HTTP on this port, for the apps on the stack's front
# network only (never published): the public port is HTTPS, the hop app -> gateway stays on the host
GATEWAY_INTERNAL_PORT = 8079
ENGINE_KEY_FILENAME = "api_key"
LOCAL_MEMORY_LIMIT_MIB = 512          # the gateway, each app, an engine of ours without a planned size
LOCAL_HEALTH_INTERVAL_S = 5.0   # pyrt services start in well under a second
LOCAL_START_PERIOD_S = 30.0
LOCAL_WAIT_TIMEOUT_S = 60.0


def health_test(port: int, path: str, tls: bool = False) -> list[str]:
    """A Docker healthcheck that needs only ``python3`` in the image (no curl in scratch images):
    the ``python3`` probe, for our own images (built on the pyrt base, which ships it).

    Raw socket + ``-I -S`` keeps each check at a few milliseconds of CPU: urllib would import
    http.client, email and ssl on every run. ``tls``: the service serves HTTPS (an app behind the
    box's certificate); the check runs inside the container on loopback, so the certificate is not
    verified -- what is checked is that the service answers.
    """
    connect = (f"import socket,ssl,sys\ns=ssl._create_unverified_context().wrap_socket("
               f"socket.create_connection(('127.0.0.1',{port}),3))\n" if tls else
               f"import socket,sys\ns=socket.create_connection(('127.0.0.1',{port}),3)\n")
    code = (connect +
            f"s.sendall(b'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n')\n"
            "d=s.recv(65536)\n"
            "while s.recv(65536):pass\n"
            "sys.exit(0 if d[9:12]==b'200' else 1)")
    return ["CMD", "python3", "-I", "-S", "-c", code]


def curl_test(port: int, path: str, timeout_s: float) -> list[str]:
    """The ``curl`` probe: for vendor images that ship curl but maybe no python3 (llama.cpp's
    ``server`` images). ``-f``: an HTTP error status fails the check; ``--max-time`` bounds it."""
    return ["CMD", "curl", "-fsS", "-o", "/dev/null", "--max-time", f"{timeout_s:g}",
            f"http://127.0.0.1:{port}{path}"]


# Docker's test that runs no check and also disables a HEALTHCHECK the image declares
NO_HEALTHCHECK = ["NONE"]


def healthcheck(health: HealthSpec) -> dict:
    """The container's Docker health check for ``health.probe``: python3 / curl run inside the
    container; ``http`` runs nothing inside (:data:`NO_HEALTHCHECK`) -- the runtime and the agent
    probe the container from outside (:mod:`appliance.runtime.probe`)."""
    if health.probe == "http":
        return {"test": list(NO_HEALTHCHECK)}
    test = (curl_test(health.port, health.path, health.timeout_s) if health.probe == "curl"
            else health_test(health.port, health.path, tls=health.probe == "python3-tls"))
    return {"test": test, "interval_s": health.interval_s, "timeout_s": health.timeout_s,
            "start_period_s": health.start_period_s, "retries": health.retries}


def gateway_dir(root: Path | None = None) -> Path:
    return (root or data_dir()) / "gateway"


def app_secrets_dir(app: str, root: Path | None = None) -> Path:
    """Host directory holding the app's key file (bound read-only at /run/appliance)."""
    return (root or data_dir()) / "apps" / app / "secrets"


def engine_secrets_dir(service: str, root: Path | None = None) -> Path:
    """Host directory holding an engine service's secret (``api_key``, 0600; bound read-only at
    :data:`ENGINE_SECRETS_TARGET` where the engine takes a key)."""
    return (root or data_dir()) / "engines" / service / "secrets"


def engine_key_file() -> str:
    """The engine's secret inside its container."""
    return f"{ENGINE_SECRETS_TARGET}/{ENGINE_KEY_FILENAME}"


# ---- devices ----------------------------------------------------------------------------------
def _match(ref: DeviceRef, inventory: Inventory | None) -> Accelerator:
    """The inventory accelerator a plan's DeviceRef means (:meth:`Inventory.find`); without an
    inventory (or for a device the node lacks) one built from the reference itself."""
    hit = inventory.find(ref) if inventory is not None else None
    if hit is not None:
        return hit
    from chip_drivers import backend_of
    return Accelerator(vendor=ref.vendor, model=ref.model or ref.vendor, index=ref.index,
                       backend=backend_of(ref.vendor), pci_bdf=ref.pci_bdf, uuid=ref.uuid,
                       physical_id=ref.physical_id, memory_mib=ref.memory_mib)


def device_access(devices: list[DeviceRef], inventory: Inventory | None, service: str):
    """The chip driver's container settings for ``devices`` (merged when several vendors)."""
    from chip_drivers import get_driver
    from chip_drivers.base import ContainerAccess

    merged = ContainerAccess()
    by_vendor: dict[str, list[DeviceRef]] = {}
    for ref in devices:
        by_vendor.setdefault(ref.vendor, []).append(ref)
    for vendor, refs in by_vendor.items():
        try:
            driver = get_driver(vendor)
        except KeyError:
            raise RuntimeFailure(f"no chip driver for vendor {vendor!r}", where=f"service {service}",
                                 fix="re-plan on this node (appliance plan)") from None
        try:
            access = driver.container_access([_match(r, inventory) for r in refs])
        except NotImplementedError as exc:
            raise RuntimeFailure(str(exc), where=f"service {service}",
                                 fix=f"the {vendor} chip driver cannot expose devices to containers yet") from None
        merged.devices += [d for d in access.devices if d not in merged.devices]
        merged.device_requests += access.device_requests
        merged.env.update(access.env)
        merged.volumes.update(access.volumes)
        merged.group_add += [g for g in access.group_add if g not in merged.group_add]
        merged.cap_add += [c for c in access.cap_add if c not in merged.cap_add]
        merged.runtime = merged.runtime or access.runtime
        merged.ipc_mode = merged.ipc_mode or access.ipc_mode
    return merged


# ---- services ---------------------------------------------------------------------------------
def inference_service(ps: PlannedService, inventory: Inventory | None, catalog: Any = None,
                      root: Path | None = None) -> ServiceSpec:
    """An engine's container: its devices, weights (read-only), health probe and -- where its engine
    takes one -- its secret (the key directory bound read-only, the command or environment naming
    the file: :func:`appliance.planner.command.key_launch`). Ours run as the engine account with a
    memory bound; a vendor image keeps its own user and is bounded by the devices it gets."""
    from appliance.catalog.contract import key_input
    from appliance.planner.command import key_launch
    from appliance.runtime.images import build_dir_for, normalize_build

    access = device_access(ps.devices, inventory, ps.name)
    env = dict(ps.env)
    env.update(access.env)
    env.setdefault("PORT", str(ps.port))
    env.setdefault("SERVED_MODEL_NAME", ps.served_model_name)
    env.setdefault("MODEL_ROLE", ps.role)
    binds = [Bind(source=host, target=target, read_only=True) for host, target in sorted(access.volumes.items())]
    if ps.model_path:
        # the weights directory, read-only, at the same path inside (the engine is pointed at the
        # file in it for GGUF: model_container_path)
        binds.append(Bind(source=ps.model_path, target=ps.model_path, read_only=True))
    if ps.conversion is not None:  # the engine serves the converted weights (appliance.deploy.convert)
        binds.append(Bind(source=ps.conversion.output_path, target=ps.conversion.output_path, read_only=True))
    engine = catalog.engines.get(ps.engine) if catalog is not None else None
    build = normalize_build(ps.build) or (normalize_build(engine.build) if engine is not None and engine.build
                                          else build_dir_for(ps.image, catalog))
    local = build is not None
    quick = local and ps.demo  # the templated test engine starts in well under a second
    hc = ps.health
    health = HealthSpec(path=hc.path, port=hc.port, retries=hc.retries, timeout_s=hc.timeout_s,
                        probe=HealthCheck.probe_for(hc.probe, build),
                        interval_s=LOCAL_HEALTH_INTERVAL_S if local else hc.interval_s,
                        start_period_s=LOCAL_START_PERIOD_S if quick else hc.start_period_s,
                        wait_timeout_s=LOCAL_WAIT_TIMEOUT_S if quick else max(hc.start_period_s, 60.0))
    memory_limit = None
    if quick:
        memory_limit = 256
    elif ps.backend == "cpu" and ps.memory_mib_per_device:
        # a CPU engine's planned RAM (weights + KV cache + overhead) with a margin: a runaway request
        # hits its own limit, not the box's other services
        memory_limit = int(ps.memory_mib_per_device * 1.25) + 256
    elif local:
        memory_limit = LOCAL_MEMORY_LIMIT_MIB  # every container of ours is bounded
    launch = key_launch(key_input(engine.service if engine is not None else None), list(ps.entrypoint),
                        list(ps.command), env, engine_key_file())
    if launch.applied:
        binds.append(Bind(source=str(engine_secrets_dir(ps.name, root)), target=ENGINE_SECRETS_TARGET))
    return ServiceSpec(
        name=ps.name, kind="inference", image=ps.image, build=build, recipe=ps.recipe,
        entrypoint=launch.entrypoint, command=launch.command, env=launch.env, port=ps.port, aliases=[ps.name],
        binds=binds, tmpfs={"/tmp": "rw,size=64m"} if local else {},
        devices=list(access.devices), device_requests=list(access.device_requests),
        device_refs=list(ps.devices), group_add=list(access.group_add), runtime=access.runtime,
        cap_add=list(access.cap_add), ipc_mode=access.ipc_mode, hardened=local, health=health,
        user=container_user(pyrt.ENGINE_UID) if local else None,
        memory_limit_mib=memory_limit, cpuset=ps.cpuset,
        shm_size_mib=None if (local or access.ipc_mode == "host") else 8192,
        served_models=[ps.served_model_name], demo=ps.demo)


def _local_service(name: str, kind: str, image: str, build: str | None, port: int, host_port: int,
                   settings: Settings, env: dict[str, str], binds: list[Bind], depends_on: list[str],
                   uid: int, networks: list[str], served_models: list[str] | None = None,
                   health_path: str = "/health", demo: bool = False) -> ServiceSpec:
    return ServiceSpec(
        name=name, kind=kind, image=image, build=build, env={"PORT": str(port), **env},
        port=port, host_port=host_port, host_ip=settings.bind_ip, aliases=[name], binds=binds,
        tmpfs={"/tmp": "rw,size=64m"}, hardened=True, user=container_user(uid), networks=networks,
        health=HealthSpec(path=health_path, port=port, interval_s=LOCAL_HEALTH_INTERVAL_S,
                          start_period_s=LOCAL_START_PERIOD_S, wait_timeout_s=LOCAL_WAIT_TIMEOUT_S),
        depends_on=depends_on, memory_limit_mib=LOCAL_MEMORY_LIMIT_MIB, served_models=served_models or [],
        demo=demo)


def tls_dir(root: Path | None = None) -> Path:
    """Host directory of the box's certificate (written by appliance.deploy.tls)."""
    return (root or data_dir()) / "tls"


def _with_tls(svc: ServiceSpec, root: Path | None, env: dict[str, str]) -> ServiceSpec:
    """``svc`` serving HTTPS: the certificate directory read-only, the key's group, where they are."""
    return svc.model_copy(update={"tls": True, "env": {**svc.env, **env},
                                  "binds": [*svc.binds, Bind(source=str(tls_dir(root)), target=TLS_TARGET)],
                                  "group_add": [*svc.group_add, str(TLS_GID)]})


def routes_for(services: list[ServiceSpec], remote: list | None = None) -> dict:
    """The gateway's routes.json: served model name -> upstream base URL on the engine network, and
    the service whose secret the gateway sends (the secret itself is in upstream_keys.json only).
    ``remote``: a cluster head's :class:`~appliance.runtime.models.RemoteEngine` list -- models
    served on other nodes, at their published address; a model served by several engines (here
    first) gets the others as ``replicas``."""
    engines: dict[str, list[dict]] = {}
    for svc in services:
        if svc.kind != "inference":
            continue
        for model in svc.served_models:
            engines[model] = [{"upstream": svc.internal_url(), "service": svc.name,
                               "role": svc.env.get("MODEL_ROLE", "")}]
    for r in remote or []:
        for model in r.served_models:
            engines.setdefault(model, []).append({"upstream": r.url, "service": r.key, "role": r.role})
    models = {}
    for model, found in engines.items():
        models[model] = dict(found[0])
        if len(found) > 1:  # replicas on other nodes: the gateway takes turns and skips one that is gone
            models[model]["replicas"] = [{"upstream": e["upstream"], "service": e["service"]} for e in found[1:]]
    return {"format": "appliance-routes/1", "models": dict(sorted(models.items()))}


def worker_engine_ports(services: list[str], base: int | None = None) -> dict[str, int]:
    """A cluster worker's engine host ports: consecutive from ``base`` in name order (the
    controller computes the same to tell the head where each engine is)."""
    from appliance.runtime.models import DEFAULT_ENGINE_PORT_BASE

    start = base or DEFAULT_ENGINE_PORT_BASE
    return {name: start + i for i, name in enumerate(sorted(services))}


def _buildable(build: str | None) -> bool:
    return bool(build) and (images_dir() / build / "main.py").is_file()


def compose(plan: Plan, *, catalog: Any, inventory: Inventory | None = None,
            settings: Settings | None = None, instance: str | None = None,
            root: Path | None = None, warnings: list[str] | None = None,
            extra_services: list[ServiceSpec] | None = None) -> StackSpec:
    """The complete stack for ``plan`` (deterministic: same inputs, same spec).

    The gateway and apps come from the plan (``plan.gateway``, ``plan.apps``: the planner bound
    every app's roles to served models). How each is wired -- container port, health path,
    data volume, its key's rate limit -- comes from the catalog (``platform.gateway``,
    ``apps``), the one source of truth; the key file and data mounts are this module's
    container contract (:data:`GATEWAY_CONFIG_TARGET`, :data:`APP_SECRETS_TARGET`,
    :data:`APP_DATA_TARGET`). Host ports: ``settings.gateway_port``, and each app's catalog port
    unless ``settings.app_port_base`` is set (then consecutive, in name order). An image whose
    sources are not shipped (no ``images/<build>/main.py``) is left out with a warning.
    ``extra_services`` (e.g. a training service) are appended as given; one that names no
    networks is on none (a job reads and writes local files only: it needs neither the engines
    nor the gateway).

    Networks: every engine is on the internal engine network alone (and publishes nothing: a
    host port on one is refused), the apps on the front network, the gateway on both. A cluster
    worker (``settings.cluster_role``) is the exception: engines only, on the front network,
    published on the node's address (:func:`worker_engine_ports`), each behind its secret; a
    head's routes also name the workers' engines (``settings.remote_engines``).
    """
    from appliance.runtime.images import normalize_build

    settings = settings or Settings()
    warnings = warnings if warnings is not None else []
    inst = instance or L.instance()
    front, engines = L.network_name(inst), L.engine_network_name(inst)
    demo = any(ps.demo for ps in plan.services)
    worker = settings.cluster_role == "worker"
    services = [inference_service(ps, inventory, catalog, root).model_copy(update={"networks": [engines]})
                for ps in plan.services]
    if worker:  # reached by the head's gateway on this node's address, behind each engine's secret
        ports = worker_engine_ports([s.name for s in services], settings.engine_port_base)
        services = [s.model_copy(update={"networks": [front], "host_ip": settings.node_address,
                                         "host_port": ports[s.name]}) for s in services]
    inference_names = [s.name for s in services]
    app_names: list[str] = []
    gw_cat = catalog.platform.gateway
    gw_image = plan.gateway.image if plan.gateway else gw_cat.image
    gw_build = normalize_build(plan.gateway.build if plan.gateway else gw_cat.build)
    if worker:
        pass  # a cluster worker serves engines only: the gateway and the apps run on the head
    elif gw_build and not _buildable(gw_build):
        warnings.append(f"the gateway and apps are left out: images/{gw_build}/main.py is missing")
    else:
        gw_port = plan.gateway.port if plan.gateway else gw_cat.port
        gateway = _local_service(
            GATEWAY, "gateway", gw_image, gw_build, gw_port, settings.gateway_port, settings,
            env={"GATEWAY_CONFIG_DIR": GATEWAY_CONFIG_TARGET},
            binds=[Bind(source=str(gateway_dir(root)), target=GATEWAY_CONFIG_TARGET, read_only=False)],
            depends_on=inference_names, uid=pyrt.GATEWAY_UID, networks=[front, engines],
            health_path=gw_cat.health, demo=demo)
        # a connection costs no thread on the asyncio gateway: a flood of half-sent requests meets its
        # own connection caps (GATEWAY_MAX_CONNECTIONS), while a bound still stops a runaway process
        gateway = gateway.model_copy(update={"pids_limit": GATEWAY_PIDS_LIMIT})
        inside_port = gw_port
        if settings.tls:
            inside_port = GATEWAY_INTERNAL_PORT
            gateway = _with_tls(gateway, root, {"GATEWAY_TLS_CERT": f"{TLS_TARGET}/cert.pem",
                                                "GATEWAY_TLS_KEY": f"{TLS_TARGET}/key.pem",
                                                "GATEWAY_INTERNAL_PORT": str(GATEWAY_INTERNAL_PORT)})
            gateway = gateway.model_copy(update={"health": gateway.health.model_copy(
                update={"port": GATEWAY_INTERNAL_PORT})})
        services.append(gateway)
        gateway_url = f"http://{GATEWAY}:{inside_port}/v1"
        public_url = f"{gateway.endpoint()}/v1"
        for i, planned in enumerate(sorted(plan.apps, key=lambda a: a.name)):
            name = planned.name
            app = catalog.apps.get(name)
            if app is None:
                warnings.append(f"app {name} is left out: the catalog no longer has it")
                continue
            build = normalize_build(planned.build or app.build)
            if build and not _buildable(build):
                warnings.append(f"app {name} is left out: images/{build}/main.py is missing")
                continue
            models = dict(planned.models)
            env = app_env(app, models, gateway_url=gateway_url, public_gateway_url=public_url)
            embed = next((ps for ps in plan.services if ps.served_model_name == models.get("embedding")), None)
            threshold = catalog.models[embed.model].relevance_threshold if embed and embed.model in catalog.models \
                else None
            if threshold is not None:
                env["EMBED_MIN_SCORE"] = f"{threshold:g}"
            if any(ps.evaluation and ps.served_model_name in models.values() for ps in plan.services):
                env["APP_EVALUATION_MODELS"] = ",".join(sorted(ps.model for ps in plan.services if ps.evaluation
                                                               and ps.served_model_name in models.values()))
            env.update({k: str(v) for k, v in planned.env.items()})
            binds = [Bind(source=str(app_secrets_dir(name, root)), target=APP_SECRETS_TARGET)]
            if app.data_volume:
                binds.append(Bind(source=L.volume_name(inst, f"{name}-data"), target=APP_DATA_TARGET,
                                  read_only=False, volume=True))
            host_port = app.port if settings.app_port_base is None else settings.app_port_base + i
            svc = _local_service(
                name, "app", planned.image, build, app.listen_port, host_port, settings, env=env, binds=binds,
                depends_on=[GATEWAY], uid=pyrt.APP_UID, networks=[front], health_path=app.health,
                served_models=sorted(set(models.values())), demo=demo)
            if settings.tls:
                svc = _with_tls(svc, root, {"APP_TLS_CERT": f"{TLS_TARGET}/cert.pem",
                                            "APP_TLS_KEY": f"{TLS_TARGET}/key.pem"})
                svc = svc.model_copy(update={"health": svc.health.model_copy(update={"probe": "python3-tls"})})
            services.append(svc)
            app_names.append(name)
    services += [s if s.networks is not None else s.model_copy(update={"networks": []})
                 for s in extra_services or []]
    for svc in services:
        if worker:
            break
        if svc.kind == "inference" and (svc.host_port is not None or front in (svc.networks or [front])):
            raise RuntimeFailure(f"engine service {svc.name} would publish a port or join the front network",
                                 where=f"service {svc.name}",
                                 fix="engines are reached only through the gateway: give it no host port")
    return StackSpec(instance=inst, network=front, engine_network=engines, settings=settings,
                     plan_hash=plan.plan_hash or plan.compute_hash(), services=services,
                     routes=routes_for(services, settings.remote_engines), apps=app_names)


# The environment variable that tells an app which served model plays a role.
ROLE_ENV = {"chat": "CHAT_MODEL", "embedding": "EMBED_MODEL", "completion": "COMPLETION_MODEL",
            "rerank": "RERANK_MODEL"}


def app_env(app, models: dict[str, str], *, gateway_url: str, public_gateway_url: str) -> dict[str, str]:
    """The environment of an app container: where the gateway is, where its key file is, the
    served model bound to each of its roles (every role the plan bound, the optional reranker
    included), its title and data directory. No secret: the key comes from the mounted file."""
    env = {"PORT": str(app.listen_port), "GATEWAY_URL": gateway_url, "GATEWAY_PUBLIC_URL": public_gateway_url,
           "APP_API_KEY_FILE": f"{APP_SECRETS_TARGET}/{APP_KEY_FILENAME}", "APP_TITLE": app.name}
    for role, model in sorted(models.items()):
        env[ROLE_ENV.get(role, f"{role.upper()}_MODEL")] = model
    if app.data_volume:
        env["APP_DATA_DIR"] = APP_DATA_TARGET
    return env
