"""The report models (dataclasses since status stopped importing pydantic) write the same JSON.

Schema ``appliance-status/1``: the field order of every object is pinned here as the pydantic
models wrote it (fields may only be added, at the end of their object, and docs/status.md
with them); ``float`` fields hold floats (pydantic turned ``37`` into ``37.0``, so does
``Report``); ``model_dump_json`` is compact like pydantic's (``--watch --json``: one line
per report).
"""

from __future__ import annotations

import json

from appliance.status import models as M

ORDER = {
    M.StatusReport: ["format", "status", "healthy", "exit_code", "summary", "instance", "appliance_version",
                     "checked_at", "release", "node", "accelerators", "services", "models", "problems",
                     "last_upgrade", "endpoints", "collect"],
    M.NodeStatus: ["hostname", "source", "uptime_s", "cpu_count", "load_1m", "memory_total_mib",
                   "memory_available_mib", "disks", "docker", "agent"],
    M.ServiceStatus: ["name", "kind", "state", "health", "ok", "uptime_s", "restarts", "repairs", "devices",
                      "endpoint", "image", "models", "container", "container_id", "release", "up_to_date",
                      "status_text", "exit_code", "note"],
    M.AcceleratorStatus: ["vendor", "index", "model", "backend", "pci_bdf", "uuid", "memory_total_mib",
                          "memory_used_mib", "utilization_pct", "temperature_c", "power_w", "power_limit_w",
                          "driver_version", "runtime", "health", "usage_source", "services", "hints"],
    M.ModelServed: ["name", "model", "role", "service", "engine", "devices", "ready", "demo", "precision", "weights",
                    "weights_verified_at", "evaluation"],
    M.ReleaseInfo: ["id", "version", "status", "source", "since", "since_ts", "plan_hash", "stack_hash", "demo",
                    "previous_id", "evaluation"],
    M.LastUpgrade: ["kind", "from_version", "to_version", "status", "step", "release", "started_at", "updated_at",
                    "error"],
    M.CollectInfo: ["hardware", "docker_api_calls", "docker_inspects", "seconds"],
    M.DiskStatus: ["path", "purpose", "total_mib", "free_mib", "used_pct"],
    M.DockerStatus: ["reachable", "host", "version", "error"],
    M.AgentStatus: ["last_event", "last_event_at", "running", "last_pass_at", "interval_s"],
    M.Problem: ["severity", "code", "subject", "message", "fix"],
    M.Endpoints: ["gateway", "apps"],
}


def _report() -> M.StatusReport:
    return M.StatusReport(
        status="degraded", healthy=False, exit_code=1, summary="s", instance="i", appliance_version="0.1.0",
        checked_at="2025-01-31T12:00:00Z",
        release=M.ReleaseInfo(id=1, status="active", source="init", since="x", since_ts=1714557600),
        node=M.NodeStatus(docker=M.DockerStatus(reachable=True, host="unix:///var/run/docker.sock"), load_1m=1,
                          disks=[M.DiskStatus(path="/", purpose="root", total_mib=10, free_mib=5, used_pct=50)]),
        accelerators=[M.AcceleratorStatus(vendor="nvidia", index=0, model="NVIDIA H200", backend="cuda", health="ok",
                                          temperature_c=37, power_w=80, power_limit_w=700.0, utilization_pct=0)],
        services=[M.ServiceStatus(name="gw", state="running", ok=True)],
        models=[M.ModelServed(name="m", service="gw", ready=True)],
        problems=[M.Problem(severity="error", code="c", subject="gw", message="ü", fix="f")],
        last_upgrade=M.LastUpgrade(kind="upgrade", status="done", step="done", started_at="a", updated_at="b"),
        endpoints=M.Endpoints(gateway="http://127.0.0.1:8080/v1", apps={"kb": "http://127.0.0.1:8081/"}),
        collect=M.CollectInfo(hardware="live", docker_api_calls=1, docker_inspects=0, seconds=0))


def test_field_order_is_the_schemas():
    data = _report().model_dump(mode="json")
    objects = {M.StatusReport: data, M.NodeStatus: data["node"], M.ServiceStatus: data["services"][0],
               M.AcceleratorStatus: data["accelerators"][0], M.ModelServed: data["models"][0],
               M.ReleaseInfo: data["release"], M.LastUpgrade: data["last_upgrade"], M.CollectInfo: data["collect"],
               M.DiskStatus: data["node"]["disks"][0], M.DockerStatus: data["node"]["docker"],
               M.AgentStatus: data["node"]["agent"], M.Problem: data["problems"][0], M.Endpoints: data["endpoints"]}
    for cls, obj in objects.items():
        assert list(obj) == ORDER[cls], cls.__name__
    assert data["format"] == M.STATUS_FORMAT == "appliance-status/1"


def test_float_fields_hold_floats_as_pydantic_wrote_them():
    data = _report().model_dump()
    acc = data["accelerators"][0]
    assert (acc["temperature_c"], acc["power_w"], acc["utilization_pct"]) == (37.0, 80.0, 0.0)
    assert all(type(acc[k]) is float for k in ("temperature_c", "power_w", "power_limit_w", "utilization_pct"))
    assert type(data["release"]["since_ts"]) is float and type(data["collect"]["seconds"]) is float
    assert type(data["node"]["load_1m"]) is float and type(data["node"]["disks"][0]["used_pct"]) is float
    assert type(data["accelerators"][0]["index"]) is int and data["node"]["disks"][0]["total_mib"] == 10
    text = json.dumps(data)
    assert '"temperature_c": 37.0' in text and '"since_ts": 1714557600.0' in text
    assert M.AgentStatus(interval_s=None).interval_s is None


def test_json_forms():
    report = _report()
    line = report.model_dump_json()
    assert "\n" not in line and line.startswith('{"format":"appliance-status/1","status":"degraded",')
    assert '"message":"ü"' in line  # UTF-8, not \\u escapes, as pydantic wrote it
    assert json.loads(line) == report.model_dump()
    assert report.model_dump_json(indent=2).startswith('{\n  "format": "appliance-status/1",\n')
    from appliance.cli.output import to_json

    assert to_json(report) == json.dumps(report.model_dump(), indent=2, ensure_ascii=False) + "\n"


def test_copies_and_equality():
    report = _report()
    copy = report.model_copy(deep=True)
    assert copy == report and copy is not report
    copy.services[0].state = "exited"
    assert report.services[0].state == "running"
    assert M.Problem(severity="info", code="c", subject="s", message="m", fix="f") == \
           M.Problem(severity="info", code="c", subject="s", message="m", fix="f")
