"""Stack composition: (plan, catalog, inventory, settings) -> StackSpec.

The plan decides engines, images and devices; composition only turns each decision into
container settings and adds what every stack has: the gateway (one OpenAI-compatible
endpoint, the only published inference port) and the sample apps from the catalog, each
wired to the gateway with its own key. It is a pure function -- no Docker, no files
written -- so ``init --dry-run`` and the tests see exactly what would be created.

Device exposure comes from the chip driver (``container_access``); never privileged.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from appliance.errors import RuntimeFailure
from appliance.inventory.models import Accelerator, Inventory
from appliance.paths import data_dir, images_dir
from appliance.planner.models import DeviceRef, PlannedService, Plan
from appliance.runtime import labels as L
from appliance.runtime.models import Bind, HealthSpec, ServiceSpec, Settings, StackSpec

GATEWAY = "gateway"
GATEWAY_IMAGE = "appliance/gateway:0.1.0"
GATEWAY_PORT = 8080
LOCAL_HEALTH_INTERVAL_S = 5.0   # pyrt services start in well under a second
LOCAL_START_PERIOD_S = 30.0
LOCAL_WAIT_TIMEOUT_S = 60.0


def health_test(port: int, path: str) -> list[str]:
    """A Docker healthcheck that needs only ``python3`` in the image (no curl in scratch images).

    Raw socket + ``-I -S`` keeps each check at a few milliseconds of CPU: urllib would import
    http.client, email and ssl on every run.
    """
    code = ("import socket,sys\n"
            f"s=socket.create_connection(('127.0.0.1',{port}),3)\n"
            f"s.sendall(b'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n')\n"
            "d=s.recv(65536)\n"
            "while s.recv(65536):pass\n"
            "sys.exit(0 if d[9:12]==b'200' else 1)")
    return ["CMD", "python3", "-I", "-S", "-c", code]


def gateway_dir(root: Path | None = None) -> Path:
    return (root or data_dir()) / "gateway"


def app_secrets_dir(app: str, root: Path | None = None) -> Path:
    """Host directory holding the app's key file (bound read-only at /run/appliance)."""
    return (root or data_dir()) / "apps" / app / "secrets"


# ---- devices ----------------------------------------------------------------------------------
def _match(ref: DeviceRef, inventory: Inventory | None) -> Accelerator:
    """The inventory accelerator a plan's DeviceRef means (by BDF, UUID, then index)."""
    if inventory is not None:
        pool = [a for a in inventory.accelerators if a.vendor == ref.vendor]
        for key in ("pci_bdf", "uuid", "physical_id"):
            want = getattr(ref, key)
            if want is not None:
                hit = next((a for a in pool if getattr(a, key) == want), None)
                if hit:
                    return hit
        hit = next((a for a in pool if a.index == ref.index), None)
        if hit:
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
def inference_service(ps: PlannedService, inventory: Inventory | None, catalog: Any = None) -> ServiceSpec:
    from appliance.runtime.images import build_dir_for, normalize_build

    access = device_access(ps.devices, inventory, ps.name)
    env = dict(ps.env)
    env.update(access.env)
    env.setdefault("PORT", str(ps.port))
    env.setdefault("SERVED_MODEL_NAME", ps.served_model_name)
    env.setdefault("MODEL_ROLE", ps.role)
    binds = [Bind(source=host, target=target, read_only=True) for host, target in sorted(access.volumes.items())]
    if ps.model_path:
        binds.append(Bind(source=ps.model_path, target=ps.model_container_path or ps.model_path, read_only=True))
    engine = catalog.engines.get(ps.engine) if catalog is not None else None
    build = normalize_build(ps.build) or (normalize_build(engine.build) if engine is not None and engine.build
                                          else build_dir_for(ps.image, catalog))
    local = build is not None
    hc = ps.health
    health = HealthSpec(path=hc.path, port=hc.port, retries=hc.retries, timeout_s=hc.timeout_s,
                        interval_s=LOCAL_HEALTH_INTERVAL_S if local else hc.interval_s,
                        start_period_s=LOCAL_START_PERIOD_S if local else hc.start_period_s,
                        wait_timeout_s=LOCAL_WAIT_TIMEOUT_S if local else max(hc.start_period_s, 60.0))
    return ServiceSpec(
        name=ps.name, kind="inference", image=ps.image, build=build,
        entrypoint=list(ps.entrypoint), command=list(ps.command), env=env, port=ps.port, aliases=[ps.name], binds=binds,
        tmpfs={"/tmp": "rw,size=64m"} if local else {},
        devices=list(access.devices), device_requests=list(access.device_requests),
        device_refs=list(ps.devices), group_add=list(access.group_add), runtime=access.runtime,
        cap_add=list(access.cap_add), ipc_mode=access.ipc_mode, hardened=local, health=health,
        memory_limit_mib=256 if ps.demo and local else None,
        shm_size_mib=None if (local or access.ipc_mode == "host") else 8192,
        served_models=[ps.served_model_name], demo=ps.demo)


def _local_service(name: str, kind: str, image: str, build: str | None, port: int, host_port: int,
                   settings: Settings, env: dict[str, str], binds: list[Bind], depends_on: list[str],
                   served_models: list[str] | None = None, health_path: str = "/health",
                   demo: bool = False) -> ServiceSpec:
    return ServiceSpec(
        name=name, kind=kind, image=image, build=build, env={"PORT": str(port), **env},
        port=port, host_port=host_port, host_ip=settings.bind_ip, aliases=[name], binds=binds,
        tmpfs={"/tmp": "rw,size=64m"}, hardened=True,
        health=HealthSpec(path=health_path, port=port, interval_s=LOCAL_HEALTH_INTERVAL_S,
                          start_period_s=LOCAL_START_PERIOD_S, wait_timeout_s=LOCAL_WAIT_TIMEOUT_S),
        depends_on=depends_on, memory_limit_mib=512, served_models=served_models or [], demo=demo)


def routes_for(services: list[ServiceSpec]) -> dict:
    """The gateway's routes.json: served model name -> upstream base URL on the stack network."""
    models = {}
    for svc in services:
        if svc.kind != "inference":
            continue
        for model in svc.served_models:
            models[model] = {"upstream": svc.internal_url(), "service": svc.name,
                             "role": svc.env.get("MODEL_ROLE", "")}
    return {"format": "appliance-routes/1", "models": dict(sorted(models.items()))}


def _models_for(roles: list[str], services: list[ServiceSpec]) -> dict[str, str]:
    """role -> the first served model of that role (e.g. chat -> demo-chat).

    ``completion`` falls back to the chat model: every OpenAI-compatible chat engine here
    also serves /v1/completions.
    """
    out = {}
    for role in roles:
        for want in ([role, "chat"] if role == "completion" else [role]):
            hit = next((svc.served_models[0] for svc in services if svc.kind == "inference"
                        and svc.env.get("MODEL_ROLE") == want and svc.served_models), None)
            if hit:
                out[role] = hit
                break
    return out


def _buildable(build: str | None) -> bool:
    return bool(build) and (images_dir() / build / "main.py").is_file()


def _plan_apps(plan: Plan, catalog: Any, services: list[ServiceSpec], warnings: list[str]) -> list[dict]:
    """The apps to run: the plan's (it bound their roles to models), else the catalog's."""
    from appliance.runtime.images import normalize_build

    if plan.apps:
        return [{"name": a.name, "image": a.image, "build": normalize_build(a.build), "port": a.port,
                 "health": a.health_path, "models": dict(a.models), "env": dict(a.env)} for a in plan.apps]
    out = []
    for name, app in sorted((catalog.apps if catalog is not None else {}).items()):
        models = _models_for([r.role for r in app.roles], services)
        missing = [r.role for r in app.roles if r.required and r.role not in models]
        if missing:
            warnings.append(f"app {name} is left out: the plan serves no {'/'.join(missing)} model")
            continue
        out.append({"name": name, "image": app.image, "build": normalize_build(app.build), "port": app.port,
                    "health": app.health, "models": models, "env": dict(app.env)})
    return out


def compose(plan: Plan, *, catalog: Any = None, inventory: Inventory | None = None,
            settings: Settings | None = None, instance: str | None = None,
            root: Path | None = None, warnings: list[str] | None = None) -> StackSpec:
    """The complete stack for ``plan`` (deterministic: same inputs, same spec).

    The gateway and apps come from the plan (``plan.gateway``, ``plan.apps``; the catalog's
    when the plan has none). How the gateway and each app are wired -- container port,
    health path, key file, data volume, environment -- is the gateway package's contract
    (:mod:`appliance.gateway.wiring`). Host ports: ``settings.gateway_port``, and each app's
    planned port unless ``settings.app_port_base`` is set (then consecutive, in name order).
    An image whose sources are not shipped (no ``images/<build>/main.py``) is left out with
    a warning.
    """
    from appliance.gateway import wiring as W
    from appliance.runtime.images import build_dir_for, normalize_build

    settings = settings or Settings()
    warnings = warnings if warnings is not None else []
    inst = instance or L.instance()
    demo = any(ps.demo for ps in plan.services)
    services = [inference_service(ps, inventory, catalog) for ps in plan.services]
    inference_names = [s.name for s in services]
    app_names: list[str] = []
    gw = plan.gateway or (catalog.platform.gateway if catalog is not None else None)
    gw_image = gw.image if gw else GATEWAY_IMAGE
    gw_build = normalize_build(gw.build) if gw and gw.build else build_dir_for(gw_image)
    if gw_build and not _buildable(gw_build):
        warnings.append(f"the gateway and apps are left out: images/{gw_build}/main.py is missing")
    else:
        gw_port = gw.port if gw else W.GATEWAY_PORT
        gateway = _local_service(
            GATEWAY, "gateway", gw_image, gw_build, gw_port, settings.gateway_port, settings,
            env=W.gateway_env(gw_port),
            binds=[Bind(source=str(gateway_dir(root)), target=W.GATEWAY_CONFIG_TARGET, read_only=False)],
            depends_on=inference_names, health_path=W.GATEWAY_HEALTH_PATH, demo=demo)
        services.append(gateway)
        gateway_url = f"http://{GATEWAY}:{gw_port}/v1"
        public_url = f"{gateway.endpoint()}/v1"
        for i, app in enumerate(sorted(_plan_apps(plan, catalog, services, warnings), key=lambda a: a["name"])):
            name = app["name"]
            wired = W.APPS.get(name)
            build = app["build"] or (wired.build if wired else build_dir_for(app["image"]))
            if build and not _buildable(build):
                warnings.append(f"app {name} is left out: images/{build}/main.py is missing")
                continue
            models = app["models"]
            if wired:
                env = W.app_env(name, gateway_url=gateway_url, public_gateway_url=public_url,
                                chat_model=models.get("chat"), embedding_model=models.get("embedding"),
                                completion_model=models.get("completion"))
                port, health_path, needs_data = wired.port, wired.health_path, wired.needs_data_volume
            else:
                env = {"PORT": str(app["port"]), "GATEWAY_URL": gateway_url, "GATEWAY_PUBLIC_URL": public_url,
                       "APP_API_KEY_FILE": f"{W.APP_SECRETS_TARGET}/{W.APP_KEY_FILENAME}",
                       **{f"{r.upper()}_MODEL": m for r, m in sorted(models.items())}}
                port, health_path, needs_data = app["port"], app["health"], True
            env.update({k: str(v) for k, v in app["env"].items()})
            binds = [Bind(source=str(app_secrets_dir(name, root)), target=W.APP_SECRETS_TARGET)]
            if needs_data:
                binds.append(Bind(source=L.volume_name(inst, f"{name}-data"), target=W.APP_DATA_TARGET,
                                  read_only=False, volume=True))
            host_port = app["port"] if settings.app_port_base is None else settings.app_port_base + i
            services.append(_local_service(
                name, "app", app["image"], build, port, host_port, settings, env=env, binds=binds,
                depends_on=[GATEWAY], health_path=health_path, served_models=sorted(set(models.values())),
                demo=demo))
            app_names.append(name)
    services += _extra_services(plan, settings, inst)
    return StackSpec(instance=inst, network=L.network_name(inst), settings=settings,
                     plan_hash=plan.plan_hash or plan.compute_hash(), services=services,
                     routes=routes_for(services), apps=app_names)


def _extra_services(plan: Plan, settings: Settings, inst: str) -> list[ServiceSpec]:
    """Services other packages add to every stack (the training service).

    A package that wants a long-running service in the stack provides
    ``appliance.train.stack.stack_services(plan, settings, instance) -> list[ServiceSpec]``.
    """
    name = "appliance.train.stack"
    try:
        if importlib.util.find_spec(name) is None:
            return []
    except ModuleNotFoundError:
        return []
    module = importlib.import_module(name)
    return list(module.stack_services(plan, settings, inst))
