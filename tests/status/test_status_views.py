"""The read-only views status reads through agree with the models and functions they mirror.

``appliance status`` reads the recorded release as plain JSON (:mod:`appliance.runtime.views`)
instead of through the pydantic ``Plan``/``StackSpec`` models, and derives the services' states
with the rule of ``stack.list_services`` over the light Docker reader. These tests keep the two
from drifting: real plans and stacks composed from node snapshots (CPU demo: the built-in models;
CPU templated: the templated test engine from the tests' catalog overlay; H200, Ascend) are
recorded with the runtime's own ``releases.begin``/``commit``, then every field and method
status uses is compared with the models', and ``service_states`` with ``list_services`` on the
same containers. No Docker: containers are ContainerInfo values as the list call returns them.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from appliance.runtime import labels as L
from appliance.runtime import releases, views
from appliance.runtime.docker_adapter import ContainerInfo
from appliance.state.store import StateStore
from tests.support import H200, NODES

CPU = NODES / "cpu-only"
ASCEND = NODES / "ascend-910b-8npu"
INST = "views"


def _compose(snapshot: Path, demo: bool, templated: bool = False):
    from appliance.catalog import load_catalog
    from appliance.inventory.detect import detect
    from appliance.planner import plan as make_plan
    from appliance.runtime.compose import compose
    from tests.stack_support import templated_catalog

    inv = detect(snapshot=str(snapshot), usage=False)
    cat = templated_catalog() if templated else load_catalog()
    plan = make_plan(inv, cat, models=["demo-chat", "demo-embed"] if templated else None, demo=demo)
    return plan, compose(plan, catalog=cat, inventory=inv, instance=INST)


STACKS = {"cpu-demo": (CPU, True, False), "cpu-templated": (CPU, True, True), "h200": (H200, False, False),
          "ascend": (ASCEND, False, False)}


@pytest.fixture(scope="module", params=list(STACKS))
def composed(request):
    snapshot, demo, templated = STACKS[request.param]
    plan, stack = _compose(snapshot, demo, templated)
    if templated:
        assert all(s.demo for s in plan.services), "the templated engine's services: demo fields compared"
    assert stack.services, request.param
    assert demo or any(s.device_refs for s in stack.services), "a plan on accelerators: device fields compared"
    return plan, stack


def _record(store, plan, stack, *, hashes: bool = True, commit: bool = True) -> int:
    rid = releases.begin(releases.open_store(store), INST, plan, stack.with_hashes() if hashes else stack,
                         source="init")
    if commit:
        releases.commit(store, INST, rid)
    return rid


def test_the_release_view_has_the_models_fields_and_methods(tmp_path, composed):
    plan, stack = composed
    store = StateStore(tmp_path / "state.db")
    _record(store, plan, stack)
    model, view = releases.current(store, INST), views.current(store, INST)
    for key in ("id", "created_ts", "status", "source", "version", "plan_hash", "stack_hash", "note"):
        assert getattr(view, key) == getattr(model, key), key
    assert [s.name for s in view.stack.services] == [s.name for s in model.stack.services]
    for v, m in zip(view.stack.services, model.stack.services):
        assert (v.kind, v.image, v.image_ref, v.host_port, v.host_ip, v.served_models, v.demo) == \
               (m.kind, m.image, m.image_ref, m.host_port, m.host_ip, m.served_models, m.demo)
        assert v.run_image() == m.run_image() and v.endpoint() == m.endpoint()
        assert view.stack.hash_of(v.name) == model.stack.hash_of(m.name)
        assert view.stack.service(v.name).name == v.name
        _same_devices(v.device_refs, m.device_refs)
    assert view.stack.endpoints() == model.stack.endpoints()
    assert view.stack.service("no-such-service") is None and view.stack.hash_of("no-such-service") is None
    assert view.plan.node == model.plan.node
    for v, m in zip(view.plan.services, model.plan.services, strict=True):
        assert (v.name, v.role, v.model, v.served_model_name, v.engine, v.demo) == \
               (m.name, m.role, m.model, m.served_model_name, m.engine, m.demo)
        _same_devices(v.devices, m.devices)


def _same_devices(got, want) -> None:
    assert [(d.vendor, d.index, d.pci_bdf, d.uuid, d.physical_id, d.model, d.memory_mib) for d in got] == \
           [(d.vendor, d.index, d.pci_bdf, d.uuid, d.physical_id, d.model, d.memory_mib) for d in want]


def test_an_older_release_without_recorded_hashes_hashes_like_the_model(tmp_path):
    plan, stack = _compose(CPU, True)
    store = StateStore(tmp_path / "state.db")
    _record(store, plan, stack, hashes=False)
    model, view = releases.current(store, INST), views.current(store, INST)
    assert view.stack.hashes == {}
    assert [view.stack.hash_of(s.name) for s in view.stack.services] == \
           [model.stack.hash_of(s.name) for s in model.stack.services]


def test_previous_recent_desired_and_notes_match_the_release_functions(tmp_path):
    plan, stack = _compose(CPU, True)
    store = StateStore(tmp_path / "state.db")
    assert views.current(store, INST) is None and views.previous_id(store, INST, None) is None
    first = _record(store, plan, stack)
    second = _record(store, plan, stack)
    _record(store, plan, stack, commit=False)  # left pending
    releases.set_desired(store, INST, "down")
    releases.note_service(store, INST, "gateway", degraded="gone", restarts=2)
    cur = views.current(store, INST)
    assert cur.id == second == releases.current(store, INST).id
    assert views.previous_id(store, INST, cur.id) == first == releases.previous(store, INST).id
    assert [(r.id, r.status, r.source) for r in views.recent(store, INST, limit=3)] == \
           [(r.id, r.status, r.source) for r in releases.history(store, INST, limit=3)]
    assert views.desired(store, INST) == releases.desired(store, INST) == "down"
    assert views.service_notes(store, INST) == releases.service_notes(store, INST)
    assert views.desired(store, "other") == releases.desired(store, "other") == "up"


def test_the_views_create_nothing_in_the_state(tmp_path):
    """A state without the runtime's tables (only another domain wrote it): nothing recorded,
    and reading creates no table (releases.open_store would)."""
    path = tmp_path / "state.db"
    store = StateStore(path)
    before = _schema(path)
    assert views.current(store, INST) is None and views.recent(store, INST) == []
    assert views.previous_id(store, INST, None) is None and views.desired(store, INST) == "up"
    assert views.service_notes(store, INST) == {}
    assert _schema(path) == before and "releases" not in views.tables(store)


def _schema(path: Path) -> list:
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall())


# ---- service states: the rule of stack.list_services ----------------------------------------------
class FakeDocker:
    """The list call only: the containers as the engine's list shows them."""

    def __init__(self, containers: list[ContainerInfo]):
        self.containers = containers
        self.filters: list[list[str]] = []

    def list_containers(self, label_filters, *, all=True):
        self.filters.append(list(label_filters))
        return sorted(self.containers, key=lambda c: (c.labels.get(L.SERVICE, ""), c.created_ts))


def _container(stack, name: str, *, spec_hash: str | None = None, state="running", status="Up 5 minutes (healthy)",
               age_s=300.0, kind=None, release=1, service=True) -> ContainerInfo:
    svc = stack.service(name)
    labels = {L.MANAGED: "true", L.INSTANCE: INST, L.KIND: kind or (svc.kind if svc else "inference"),
              L.RELEASE: str(release), L.SPEC_HASH: spec_hash or (stack.hash_of(name) if svc else "0" * 16),
              L.MODELS: ",".join(svc.served_models if svc else ["x"])}
    if service:
        labels[L.SERVICE] = name
    if svc is not None and svc.endpoint():
        labels["appliance.endpoint"] = svc.endpoint()
    return ContainerInfo(id=f"{name}-{spec_hash or 'cur'}".ljust(64, "0")[:64], name=f"appliance-{INST}-{name}",
                         image=svc.run_image() if svc else "img", state=state, status=status,
                         health="healthy" if "(healthy)" in status else None, labels=labels,
                         created_ts=time.time() - age_s)


def test_service_states_match_list_services(tmp_path):
    from appliance.runtime.converge import STACK_KINDS
    from appliance.runtime.stack import list_services

    plan, stack = _compose(CPU, True)
    stack = stack.with_hashes()
    store = StateStore(tmp_path / "state.db")
    _record(store, plan, stack)
    releases.note_service(store, INST, "code-assistant", held="maintenance")
    releases.note_service(store, INST, "gateway", degraded="device gone")
    current, bluegreen, stale, gone, *rest = [s.name for s in stack.services]
    containers = [
        _container(stack, current),                                           # up to date
        _container(stack, bluegreen, spec_hash="stale0000000000", age_s=900),  # blue/green: the old ...
        _container(stack, bluegreen, age_s=10),                               # ... and the new one
        _container(stack, stale, spec_hash="stale0000000000", state="exited", status="Exited (1) 2 minutes ago"),
        _container(stack, "orphan-svc", kind="app"),                          # not in the release
        _container(stack, "job-1", kind="job"),                               # not a stack kind
        _container(stack, "nameless", service=False),                         # no service label
    ] + [_container(stack, n) for n in rest]                                  # `gone` has none: missing
    docker = FakeDocker(containers)
    want = list_services(docker, store, INST, release=releases.current(store, INST))
    got = views.service_states(docker, INST, views.current(store, INST), views.service_notes(store, INST))
    assert [s.model_dump() for s in got] == [s.model_dump() for s in want]
    by_name = {s.name: s for s in got}
    assert by_name[gone].state == "missing" and not by_name[gone].up_to_date
    assert by_name[bluegreen].up_to_date and by_name[bluegreen].spec_hash == stack.hash_of(bluegreen)
    assert by_name[stale].state == "exited" and not by_name[stale].up_to_date
    assert by_name["code-assistant"].degraded == "maintenance" and by_name["gateway"].degraded == "device gone"
    assert "orphan-svc" in {s.name for s in got} and "job-1" not in {s.name for s in got}
    assert docker.filters == [L.instance_filter(INST)] * 2
    assert views.STACK_KINDS == STACK_KINDS


# ---- the other facts status reads without importing their owners ---------------------------------
def test_the_heartbeat_key_is_the_agents():
    from appliance.agent.loop import heartbeat_key

    assert views.heartbeat_key("i1") == heartbeat_key("i1")


def test_status_looks_for_license_files_where_licensing_installs_them(tmp_path, monkeypatch):
    from appliance.licensing.core import licenses_dir
    from appliance.paths import data_dir
    from appliance.status.collect import _license_files

    assert licenses_dir() == data_dir() / "licenses"
    assert _license_files() is False
    licenses_dir().mkdir(parents=True)
    (licenses_dir() / "l1.json").write_text("{}")
    assert _license_files() is True


def test_node_facts_from_proc_are_psutils():
    psutil = pytest.importorskip("psutil")
    from appliance.status.node import _proc_facts

    facts = _proc_facts()
    if facts is None:
        pytest.skip("no /proc/meminfo with MemAvailable here")
    boot, total, available = facts
    assert boot == psutil.boot_time() and total == psutil.virtual_memory().total
    assert abs(available - psutil.virtual_memory().available) < 256 * 2**20  # memory moves meanwhile


def test_report_times_are_datetimes_formatting():
    """collect.iso formats without importing datetime; the same text, rounding included."""
    import random
    from datetime import datetime, timezone

    from appliance.status.collect import iso

    rng = random.Random(7)
    edges = [0.0, 1.9999994, 1.9999995, 1.9999996, 1714557599.5, 1714557600.9999996, 4102444799.9999999]
    for ts in edges + [rng.uniform(0, 4e9) for _ in range(2000)]:
        assert iso(ts) == datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), ts
    assert iso(None) is None
