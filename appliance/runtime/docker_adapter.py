"""The Docker adapter: the only module that talks to the Docker engine (Docker SDK).

Everything else asks this module for what it needs, in plain Python values, and never sees
an SDK object. Keeping Docker behind one small surface means: one place that maps SDK
errors to :class:`~appliance.errors.ApplianceError`, one place that counts API calls (the
status benchmark reports them), and one place to change when the engine changes. The SDK
is imported lazily so commands that do not need Docker start fast.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import IO, Any, Iterator

from appliance.errors import DockerUnavailable, RuntimeFailure

DEFAULT_TIMEOUT_S = 30.0


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def connect(timeout_s: float = DEFAULT_TIMEOUT_S):
    """A connected ``docker.DockerClient``; raises DockerUnavailable with a fix hint."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.DockerClient(base_url=docker_host(), timeout=int(timeout_s))
        client.ping()
    except (DockerException, OSError) as exc:
        raise DockerUnavailable(
            f"cannot reach the Docker engine at {docker_host()}: {str(exc).splitlines()[0][:160]}",
            where="docker",
            fix="start it (systemctl start docker) or set DOCKER_HOST",
        ) from None
    return client


def engine_version(timeout_s: float = 5.0) -> str:
    """The engine's server version (e.g. '20.10.24'); raises DockerUnavailable."""
    client = connect(timeout_s)
    try:
        return str(client.version().get("Version", "unknown"))
    finally:
        client.close()


# ---- plain values handed to the rest of the code ----------------------------------------------
@dataclass
class ContainerInfo:
    """One container as a list call shows it (no inspect needed)."""

    id: str
    name: str
    image: str
    state: str                      # created, running, exited, restarting, paused, dead
    status: str                     # Docker's text, e.g. "Up 3 minutes (healthy)"
    health: str | None              # healthy, unhealthy, starting, or None (no healthcheck)
    labels: dict[str, str]
    created_ts: float
    ports: list[dict] = field(default_factory=list)

    @property
    def service(self) -> str | None:
        return self.labels.get("appliance.service")


@dataclass
class NetworkAttach:
    """One network a container joins, with its names there; created (``internal``, ``labels``)
    when it is missing, so a container is never recreated onto a network that is gone."""

    name: str
    aliases: list[str] = field(default_factory=list)
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ContainerCreate:
    """Everything needed to create one container (built by :mod:`appliance.runtime.compose`)."""

    name: str
    image: str
    labels: dict[str, str]
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    network: str | None = None          # one network (or "none"), when ``networks`` is empty
    aliases: list[str] = field(default_factory=list)
    networks: list[NetworkAttach] = field(default_factory=list)  # created on the first, then the others joined
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)  # "8000/tcp" -> (ip, port)
    binds: dict[str, dict] = field(default_factory=dict)            # host/volume -> {bind, mode}
    tmpfs: dict[str, str] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    device_requests: list[dict] = field(default_factory=list)
    group_add: list[str] = field(default_factory=list)
    runtime: str | None = None
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    ipc_mode: str | None = None
    read_only: bool = False
    user: str | None = None
    healthcheck: dict | None = None     # test, interval_s, timeout_s, start_period_s, retries
    restart: str = "unless-stopped"
    memory_limit_mib: int | None = None
    cpus: float | None = None
    cpuset: str | None = None
    shm_size_mib: int | None = None
    pids_limit: int | None = None
    log_max_size: str = "10m"
    log_max_files: int = 3


@dataclass
class ContainerAddress:
    """Where a running container answers on one network (:meth:`Docker.container_address`)."""

    state: str                      # running, exited, ..., or missing
    exit_code: int | None = None
    ip: str | None = None           # its address on the network (None: not attached / not running)
    started_ts: float | None = None  # when it last started (epoch seconds)


def docker_time(text: str | None) -> float | None:
    """Epoch seconds of Docker's RFC 3339 times with nanoseconds (``2024-05-01T10:00:00.123456789Z``);
    None for the zero time or anything else."""
    import re

    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text or "")
    if not m or text.startswith("0001-"):
        return None
    from datetime import datetime

    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(m.group(1) + tz).timestamp() + float(m.group(2) or 0)


def _status_health(status: str) -> str | None:
    for word in ("unhealthy", "healthy", "health: starting"):
        if f"({word})" in status:
            return "starting" if word == "health: starting" else word
    return None


def containers_from_rows(rows: list[dict]) -> list[ContainerInfo]:
    """The engine's ``GET /containers/json`` rows as ContainerInfo, by service then age (the
    one conversion, for :class:`Docker` and :class:`EngineReader` alike)."""
    out = []
    for row in rows:
        status = row.get("Status", "")
        names = row.get("Names") or ["/?"]
        out.append(ContainerInfo(
            id=row["Id"], name=names[0].lstrip("/"), image=row.get("Image", ""),
            state=row.get("State", ""), status=status, health=_status_health(status),
            labels=row.get("Labels") or {}, created_ts=float(row.get("Created", 0)),
            ports=row.get("Ports") or []))
    return sorted(out, key=lambda c: (c.labels.get("appliance.service", ""), c.created_ts))


class Docker:
    """A connection to the engine with the operations the runtime needs.

    ``api_calls`` counts HTTP requests made to the engine (for the status benchmark).
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, client=None):
        self.client = client or connect(timeout_s)
        # connect() made two requests before the hook below exists: GET /version (the SDK
        # auto-detects the API version) and GET /_ping
        self.api_calls = 2 if client is None else 0
        self.server_header: str | None = None  # e.g. "Docker/20.10.24 (linux)", seen on any response
        self.client.api.hooks["response"].append(self._count)

    def _count(self, response, *args, **kwargs):
        self.api_calls += 1
        self.server_header = response.headers.get("Server") or self.server_header
        return response

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Docker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _errors(self):
        """The exceptions an engine call can raise: the SDK's own, and the HTTP client's when
        the engine goes away mid-call (``requests`` connection errors and timeouts)."""
        from docker.errors import DockerException
        from requests.exceptions import RequestException
        return (DockerException, RequestException)

    def _failed(self, what: str, exc: Exception, where: str = "docker") -> RuntimeFailure:
        """One mapping of an engine failure to a typed error: connection trouble means the
        engine is unreachable (DockerUnavailable), anything else is the call failing."""
        from requests.exceptions import ConnectionError as ReqConnectionError
        from requests.exceptions import Timeout

        if isinstance(exc, (ReqConnectionError, Timeout)):
            return DockerUnavailable(f"the Docker engine at {docker_host()} stopped answering while {what}: "
                                     f"{_short(exc)}", where="docker",
                                     fix="check the engine (systemctl status docker) and re-run")
        return RuntimeFailure(f"{what} failed: {_short(exc)}", where=where,
                              fix="check the engine's log (journalctl -u docker) and re-run")

    # ---- containers ------------------------------------------------------------------------
    def list_containers(self, label_filters: list[str], *, all: bool = True) -> list[ContainerInfo]:
        """One API call: every container matching all ``label_filters`` ("k=v" or "k")."""
        try:
            rows = self.client.api.containers(all=all, filters={"label": label_filters})
        except self._errors() as exc:
            raise self._failed("listing containers", exc) from None
        return containers_from_rows(rows)

    def inspect_container(self, ref: str) -> dict | None:
        from docker.errors import NotFound
        try:
            return self.client.api.inspect_container(ref)
        except NotFound:
            return None
        except self._errors() as exc:
            raise self._failed(f"inspecting container {ref[:12]}", exc) from None

    def create_container(self, spec: ContainerCreate) -> str:
        """Create (not start) a container; returns its id. Never privileged.

        With ``spec.networks`` it is created on the first (the engine API before 1.44 takes one
        network at creation) and joined to the others before it starts; each is made present
        first. A container that cannot join one is removed again."""
        from docker.types import DeviceRequest, LogConfig

        for net in spec.networks:
            if not self.network_exists(net.name):
                self.ensure_network(net.name, net.labels, internal=net.internal)
        network = spec.networks[0].name if spec.networks else spec.network
        aliases = spec.networks[0].aliases if spec.networks else spec.aliases

        api = self.client.api
        host_kwargs: dict[str, Any] = dict(
            binds=spec.binds or None,
            port_bindings={k: v for k, v in spec.ports.items()} or None,
            devices=spec.devices or None,
            device_requests=[DeviceRequest(**d) for d in spec.device_requests] or None,
            group_add=spec.group_add or None,
            runtime=spec.runtime,
            cap_add=spec.cap_add or None,
            cap_drop=spec.cap_drop or None,
            security_opt=spec.security_opt or None,
            ipc_mode=spec.ipc_mode,
            read_only=spec.read_only or None,
            tmpfs=spec.tmpfs or None,
            privileged=False,
            restart_policy={"Name": spec.restart} if spec.restart != "no" else None,
            log_config=LogConfig(type="json-file", config={"max-size": spec.log_max_size,
                                                           "max-file": str(spec.log_max_files)}),
            mem_limit=f"{spec.memory_limit_mib}m" if spec.memory_limit_mib else None,
            nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
            cpuset_cpus=spec.cpuset,
            shm_size=f"{spec.shm_size_mib}m" if spec.shm_size_mib else None,
            pids_limit=spec.pids_limit,
            init=False,
        )
        if network:
            host_kwargs["network_mode"] = network
        host_config = api.create_host_config(**host_kwargs)
        networking = None
        if network:
            networking = api.create_networking_config(
                {network: api.create_endpoint_config(aliases=aliases or None)})
        healthcheck = None
        if spec.healthcheck:
            hc = spec.healthcheck
            healthcheck = {"Test": hc["test"]}  # ["NONE"] alone: no check (the image's own disabled too)
            for key, name in (("interval_s", "Interval"), ("timeout_s", "Timeout"), ("start_period_s", "StartPeriod")):
                if hc.get(key) is not None:
                    healthcheck[name] = int(hc[key] * 1e9)
            if hc.get("retries") is not None:
                healthcheck["Retries"] = int(hc["retries"])
        try:
            res = api.create_container(
                image=spec.image, command=spec.command or None, entrypoint=spec.entrypoint or None, name=spec.name,
                environment=spec.env or None, labels=spec.labels, host_config=host_config,
                networking_config=networking, healthcheck=healthcheck, user=spec.user,
                ports=[int(p.split("/")[0]) for p in spec.ports] or None, detach=True)
        except self._errors() as exc:
            raise RuntimeFailure(f"cannot create container {spec.name}: {_short(exc)}",
                                 where=f"service {spec.labels.get('appliance.service', spec.name)}",
                                 fix="check the image and device settings (appliance init --dry-run)") from None
        for net in spec.networks[1:]:
            try:
                api.connect_container_to_network(res["Id"], net.name, aliases=net.aliases or None)
            except self._errors() as exc:
                self.remove(res["Id"], force=True)
                raise RuntimeFailure(f"cannot attach container {spec.name} to network {net.name}: {_short(exc)}",
                                     where=f"network {net.name}",
                                     fix="check the engine's networks (docker network ls) and re-run") from None
        return res["Id"]

    def start(self, ref: str) -> None:
        try:
            self.client.api.start(ref)
        except self._errors() as exc:
            raise RuntimeFailure(f"cannot start container {ref[:12]}: {_short(exc)}", where="docker",
                                 fix="see `appliance logs SERVICE` and the device/driver setup") from None

    def stop(self, ref: str, timeout_s: int = 10) -> None:
        from docker.errors import NotFound
        try:
            self.client.api.stop(ref, timeout=timeout_s)
        except NotFound:
            pass
        except self._errors() as exc:
            raise self._failed(f"stopping container {ref[:12]}", exc) from None

    def remove(self, ref: str, *, force: bool = True) -> None:
        from docker.errors import NotFound
        try:
            self.client.api.remove_container(ref, force=force, v=False)
        except NotFound:
            pass
        except self._errors() as exc:
            raise self._failed(f"removing container {ref[:12]}", exc) from None

    def replace_container(self, spec: ContainerCreate, *, start: bool = True) -> str:
        """The one way a container is (re)created: whatever holds ``spec.name`` is removed, the
        new one created and (``start``) started; returns its id.

        On a failed start the new container is removed again, so a caller never leaves a
        created-but-dead container behind. Callers decide *when* to replace (blue/green,
        agent repair, create-only); this decides *how*.
        """
        leftover = self.inspect_container(spec.name)
        if leftover is not None:
            self.remove(leftover["Id"], force=True)
        cid = self.create_container(spec)
        if start:
            try:
                self.start(cid)
            except BaseException:
                self.remove(cid, force=True)
                raise
        return cid

    def run_once(self, spec: ContainerCreate, timeout_s: float = 60.0) -> tuple[int, list[str]]:
        """Run a one-off container to its end, then remove it: (exit code, its last log lines when
        it failed)."""
        cid = self.replace_container(spec, start=True)
        try:
            code = self.wait(cid, timeout_s)
            return code, (self.log_tail(cid, 20) if code != 0 else [])
        finally:
            self.remove(cid, force=True)

    def wait(self, ref: str, timeout_s: float = 60.0) -> int:
        """Wait for the container to exit; its exit code."""
        try:
            return int(self.client.api.wait(ref, timeout=int(timeout_s)).get("StatusCode", -1))
        except self._errors() as exc:
            raise self._failed(f"waiting for container {ref[:12]}", exc) from None

    def logs(self, ref: str, *, tail: int | str = 100, follow: bool = False,
             timestamps: bool = False) -> Iterator[bytes] | bytes:
        try:
            return self.client.api.logs(ref, stdout=True, stderr=True, tail=tail, follow=follow,
                                        stream=follow, timestamps=timestamps)
        except self._errors() as exc:
            raise self._failed(f"reading the logs of {ref[:12]}", exc) from None

    def log_tail(self, ref: str, lines: int = 20) -> list[str]:
        try:
            data = self.client.api.logs(ref, stdout=True, stderr=True, tail=lines)
        except self._errors():
            return []
        return data.decode("utf-8", "replace").splitlines()[-lines:]

    def health(self, ref: str) -> tuple[str, str | None, int | None]:
        """(state, health, exit code) from one inspect; state 'missing' when gone."""
        info = self.inspect_container(ref)
        if info is None:
            return "missing", None, None
        st = info.get("State") or {}
        health = (st.get("Health") or {}).get("Status")
        return st.get("Status", "unknown"), health, st.get("ExitCode")

    def last_health_check(self, ref: str) -> str | None:
        """The output of the container's most recent health check (why it is not healthy)."""
        info = self.inspect_container(ref) or {}
        logs = ((info.get("State") or {}).get("Health") or {}).get("Log") or []
        if not logs:
            return None
        last = logs[-1]
        out = (last.get("Output") or "").strip().replace("\n", " | ")
        return f"exit {last.get('ExitCode')}" + (f": {out[-300:]}" if out else "")

    def container_ip(self, ref: str, network: str) -> str | None:
        """The container's IPv4 address on ``network`` (None: not attached, or not running)."""
        info = self.inspect_container(ref)
        if not info:
            return None
        net = ((info.get("NetworkSettings") or {}).get("Networks") or {}).get(network) or {}
        return net.get("IPAddress") or None

    def container_address(self, ref: str, network: str) -> "ContainerAddress":
        """One inspect: the container's state, exit code, start time and its IP on ``network``
        (what an outside health probe needs); state 'missing' when it is gone.

        A container that is not on ``network`` but on exactly one other network answers at its
        address there: an engine lives on its stack's engine network only, and a caller that knows
        only the stack's front network (``StackSpec.network``) must still find it."""
        info = self.inspect_container(ref)
        if info is None:
            return ContainerAddress(state="missing")
        st = info.get("State") or {}
        nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
        net = nets.get(network) or (next(iter(nets.values())) if len(nets) == 1 else None) or {}
        return ContainerAddress(state=st.get("Status", "unknown"), exit_code=st.get("ExitCode"),
                                ip=net.get("IPAddress") or net.get("GlobalIPv6Address") or None,
                                started_ts=docker_time(st.get("StartedAt")))

    # ---- networks and volumes --------------------------------------------------------------
    def network_exists(self, name: str) -> bool:
        try:
            return any(n.get("Name") == name for n in self.client.api.networks(names=[name]))
        except self._errors() as exc:
            raise self._failed(f"looking up network {name}", exc) from None

    def ensure_network(self, name: str, labels: dict[str, str], *, internal: bool = False) -> bool:
        """Create the bridge network unless it exists; True when created. ``internal``: no route
        out of it and no published ports (Docker's --internal)."""
        if self.network_exists(name):
            return False
        try:
            self.client.api.create_network(name, driver="bridge", labels=labels, check_duplicate=True,
                                           internal=internal)
        except self._errors() as exc:
            raise self._failed(f"creating network {name}", exc, where=f"network {name}") from None
        return True

    def list_networks(self, label_filters: list[str]) -> list[dict]:
        try:
            rows = self.client.api.networks(filters={"label": label_filters})
        except self._errors() as exc:
            raise self._failed("listing networks", exc) from None
        return [{"id": n["Id"], "name": n["Name"], "labels": n.get("Labels") or {},
                 "internal": bool(n.get("Internal"))} for n in rows]

    def remove_network(self, ref: str) -> None:
        from docker.errors import NotFound
        try:
            self.client.api.remove_network(ref)
        except NotFound:
            pass
        except self._errors() as exc:
            raise self._failed(f"removing network {ref[:24]}", exc) from None

    def ensure_volume(self, name: str, labels: dict[str, str]) -> bool:
        from docker.errors import NotFound
        try:
            try:
                self.client.api.inspect_volume(name)
                return False
            except NotFound:
                self.client.api.create_volume(name, driver="local", labels=labels)
                return True
        except self._errors() as exc:
            raise self._failed(f"creating volume {name}", exc, where=f"volume {name}") from None

    def list_volumes(self, label_filters: list[str]) -> list[dict]:
        try:
            res = self.client.api.volumes(filters={"label": label_filters}) or {}
        except self._errors() as exc:
            raise self._failed("listing volumes", exc) from None
        return [{"name": v["Name"], "labels": v.get("Labels") or {}} for v in res.get("Volumes") or []]

    def remove_volume(self, name: str) -> None:
        from docker.errors import NotFound
        try:
            self.client.api.remove_volume(name, force=True)
        except NotFound:
            pass
        except self._errors() as exc:
            raise self._failed(f"removing volume {name}", exc) from None

    # ---- images ----------------------------------------------------------------------------
    def image_labels(self, ref: str) -> dict[str, str] | None:
        """The image's labels ({} when it has none), or None when the image is absent."""
        from docker.errors import ImageNotFound, NotFound
        try:
            info = self.client.api.inspect_image(ref)
        except (ImageNotFound, NotFound):
            return None
        except self._errors() as exc:
            raise self._failed(f"inspecting image {ref}", exc) from None
        return (info.get("Config") or {}).get("Labels") or {}

    def image_id(self, ref: str) -> str | None:
        from docker.errors import ImageNotFound, NotFound
        try:
            return self.client.api.inspect_image(ref)["Id"]
        except (ImageNotFound, NotFound):
            return None
        except self._errors() as exc:
            raise self._failed(f"inspecting image {ref}", exc) from None

    def build_image(self, context: IO[bytes], tag: str, labels: dict[str, str],
                    timeout_s: float = 600.0) -> str:
        """Build from a tar build context (legacy builder, no pull); returns the image id."""
        api = self.client.api
        log: list[str] = []
        try:
            # APPLIANCE_BUILD_NOCACHE=1 measures a first build (benchmarks) instead of a cache hit
            stream = api.build(fileobj=context, custom_context=True, tag=tag, labels=labels, rm=True,
                               forcerm=True, pull=False, decode=True, timeout=int(timeout_s),
                               nocache=os.environ.get("APPLIANCE_BUILD_NOCACHE") == "1")
            for chunk in stream:
                if "stream" in chunk:
                    log.append(chunk["stream"].rstrip())
                if "error" in chunk:
                    raise RuntimeFailure(f"building {tag} failed: {chunk['error'].strip()[:300]}",
                                         where=f"image {tag}", fix="see the build log with --debug")
        except self._errors() as exc:
            raise RuntimeFailure(f"building {tag} failed: {_short(exc)}", where=f"image {tag}",
                                 fix="check that the Docker engine can build images") from None
        image_id = self.image_id(tag)
        if image_id is None:
            raise RuntimeFailure(f"building {tag} produced no image: {' | '.join(log[-3:])}",
                                 where=f"image {tag}", fix="re-run with --debug")
        return image_id

    def pull_image(self, ref: str, progress=None, report_every_s: float = 2.0) -> None:
        """Pull ``ref`` from its registry, reporting bytes downloaded; RuntimeFailure on any error."""
        repo, _, tag = ref.rpartition(":")
        if not repo or "/" in tag:
            repo, tag = ref, "latest"
        layers: dict[str, tuple[int, int]] = {}
        last = 0.0
        try:
            for item in self.client.api.pull(repo, tag=tag, stream=True, decode=True):
                if item.get("error"):
                    raise RuntimeFailure(f"pulling {ref} failed: {str(item['error'])[:300]}", where=f"image {ref}",
                                         fix="load it from an offline bundle (appliance init --bundle FILE)")
                detail = item.get("progressDetail") or {}
                if item.get("id") and detail.get("total"):
                    layers[item["id"]] = (int(detail.get("current", 0)), int(detail["total"]))
                now = time.monotonic()
                if progress and layers and now - last >= report_every_s:
                    done = sum(c for c, _ in layers.values())
                    total = sum(t for _, t in layers.values())
                    progress(f"pulling {ref}: {done / 1e6:.0f} of {total / 1e6:.0f} MB")
                    last = now
        except self._errors() as exc:
            raise RuntimeFailure(f"pulling {ref} failed: {_short(exc)}", where=f"image {ref}",
                                 fix="load it from an offline bundle (appliance init --bundle FILE) "
                                     "or `docker load` it first") from None

    def list_images(self, label_filters: list[str], *, dangling: bool | None = None) -> list[dict]:
        filters: dict = {"label": label_filters}
        if dangling is not None:
            filters["dangling"] = dangling
        try:
            rows = self.client.api.images(filters=filters)
        except self._errors() as exc:
            raise self._failed("listing images", exc) from None
        return [{"id": i["Id"], "tags": [t for t in (i.get("RepoTags") or []) if t != "<none>:<none>"],
                 "labels": i.get("Labels") or {}, "size": i.get("Size", 0), "created_ts": float(i.get("Created", 0))}
                for i in rows]

    def remove_image(self, ref: str) -> bool:
        """Remove an image (never forced); False when the engine keeps it because a container
        (of any instance) still uses it -- keeping an image is always safe."""
        from docker.errors import APIError, ImageNotFound, NotFound
        try:
            self.client.api.remove_image(ref, force=False, noprune=False)
        except (ImageNotFound, NotFound):
            return True
        except APIError as exc:
            if exc.status_code == 409:  # conflict: in use by a container, or referenced by tags
                return False
            raise self._failed(f"removing image {ref}", exc) from None
        except self._errors() as exc:
            raise self._failed(f"removing image {ref}", exc) from None
        return True

    # ---- engine facts ----------------------------------------------------------------------
    def runtimes(self) -> list[str]:
        try:
            return sorted((self.client.api.info().get("Runtimes") or {}).keys())
        except self._errors() as exc:
            raise self._failed("reading the engine's runtimes", exc) from None


# The read-only client lives in appliance.runtime.engine_reader; these names stay importable from here.
_READER_NAMES = ("EngineReader", "read_client")
READ_MAX_RESPONSE_BYTES = 64 << 20   # the most the read-only client takes of one answer (thousands of containers: MiB)


def __getattr__(name: str):
    if name in _READER_NAMES:
        from appliance.runtime import engine_reader

        return getattr(engine_reader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _short(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text).splitlines()[0][:300] if text else type(exc).__name__


def wait_until(predicate, timeout_s: float, interval_s: float = 0.25):
    """Poll ``predicate()`` until it returns a truthy value or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)


# ---- image streams (bundles) --------------------------------------------------------------------
# Module functions over a :class:`Docker`, used by the offline-bundle package: images move as
# streams (docker save / docker load) so no image is ever held whole in memory.
def docker_root_dir(docker: Docker) -> str:
    """Where the engine keeps its data (for disk-space checks)."""
    try:
        return str(docker.client.api.info().get("DockerRootDir") or "/var/lib/docker")
    except docker._errors() as exc:
        raise docker._failed("reading the engine's info", exc) from None


def image_size_bytes(docker: Docker, ref: str) -> int:
    return int(docker.client.api.inspect_image(ref).get("Size") or 0)


def save_image_stream(docker: Docker, ref: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """``docker save REF`` as an iterator of byte chunks."""
    try:
        return docker.client.api.get_image(ref, chunk_size=chunk_size)
    except docker._errors() as exc:
        raise RuntimeFailure(f"cannot export {ref}: {_short(exc)}", where=f"image {ref}",
                             fix="check that the image exists (docker image inspect)") from None


def load_image_stream(docker: Docker, chunks) -> list[str]:
    """``docker load`` from an iterator of byte chunks (sent chunked); returns what was loaded.

    An error the engine reports in the load stream raises RuntimeFailure.
    """
    loaded: list[str] = []
    try:
        for item in docker.client.api.load_image(chunks):
            if not isinstance(item, dict):
                continue
            if item.get("error") or item.get("errorDetail"):
                detail = item.get("error") or (item.get("errorDetail") or {}).get("message", "")
                raise RuntimeFailure(f"docker load failed: {str(detail)[:300]}", where="docker load",
                                     fix="check the images in the bundle and the engine's disk space")
            stream = item.get("stream", "")
            if "Loaded image" in stream:
                loaded.append(stream.split(":", 1)[1].strip())
    except docker._errors() as exc:
        raise RuntimeFailure(f"docker load failed: {_short(exc)}", where="docker load",
                             fix="check the engine's disk space and log") from None
    return loaded


def tag_image(docker: Docker, image: str, ref: str) -> None:
    """Tag ``image`` (id or ref) as ``ref`` (``repo:tag``)."""
    repo, _, tag = ref.rpartition(":")
    if not repo or "/" in tag:
        repo, tag = ref, "latest"
    try:
        docker.client.api.tag(image, repo, tag)
    except docker._errors() as exc:
        raise docker._failed(f"tagging {image[:19]} as {ref}", exc, where=f"image {ref}") from None
