"""Several hosts in one run (Ansible is the multi-host engine) and per-chip role selection.

1. Two local-connection hosts with different roots, provisioned in one real run and
   reported per host.
2. Node snapshots (NVIDIA, Ascend, AMD, a mixed NVIDIA+Ascend box, a CPU-only server) as the
   roots of five hosts in one check-mode run: each host's chips are read from its PCI sysfs
   by the playbook itself, the right chip roles' tasks run and every other chip's are
   skipped, and nothing on disk changes.
"""

from __future__ import annotations

import json

import pytest
from provsupport import copy_snapshot_root, data_dir_env, inventory_file, run_cli, snapshot_dir, tree_state, write

pytestmark = [pytest.mark.ansible, pytest.mark.slow]

CHIP_ROLES = ("nvidia", "amd", "ascend", "kunlunxin", "hygon", "cambricon", "metax", "mthreads", "iluvatar", "gaudi")


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    base = tmp_path_factory.mktemp("prov-two")
    inv = inventory_file(base / "hosts.yml", {
        "node-a": {"appliance_root": str(base / "a")},
        "node-b": {"appliance_root": str(base / "b"), "appliance_docker_data_root": "/data/docker"},
    })
    with data_dir_env(base / "data"):
        res = run_cli("provision", "--inventory", str(inv), "--json")
    return {"base": base, "res": res}


def test_two_hosts_in_one_run_reported_per_host(two_hosts):
    res, base = two_hosts["res"], two_hosts["base"]
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["status"] == "successful"
    hosts = {h["host"]: h for h in report["hosts"]}
    assert set(hosts) == {"node-a", "node-b"}
    for h in hosts.values():
        assert h["changed"] >= 5 and h["failed"] == 0
    assert {t["host"] for t in report["tasks"]} == {"node-a", "node-b"}
    a = json.loads((base / "a/etc/docker/daemon.json").read_text())
    b = json.loads((base / "b/etc/docker/daemon.json").read_text())
    assert "data-root" not in a and b["data-root"] == "/data/docker"
    for root in ("a", "b"):
        assert (base / root / "etc/systemd/system/appliance-agent.service").is_file()


def test_root_with_inventory_is_a_usage_error(tmp_path):
    inv = inventory_file(tmp_path / "hosts.yml", {"x": {"appliance_root": str(tmp_path / "x")}})
    res = run_cli("provision", "--inventory", str(inv), "--root", str(tmp_path / "r"))
    assert res.returncode == 2
    assert res.stderr.startswith("error: --root:") and "appliance_root" in res.stderr


def test_broken_inventory_fails_instead_of_running_nothing(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts: [\n")
    res = run_cli("provision", "--inventory", str(bad))
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("error: provision:") and "inventory" in err and "YAML parsing failed" in err


def test_missing_inventory_file_is_a_usage_error(tmp_path):
    res = run_cli("provision", "--inventory", str(tmp_path / "nope.yml"))
    assert res.returncode == 2 and "inventory file does not exist" in res.stderr


SNAPSHOT_HOSTS = {
    "nvidia-h200": "h200-1gpu",
    "ascend-910b": "ascend-910b-8npu",
    "amd-mi300x": "amd-mi300x-8gpu-epyc",
    "mixed": "mixed-nvidia-ascend",
    "cpu-only": "cpu-only",
}


@pytest.fixture(scope="module")
def chip_check(tmp_path_factory):
    from appliance.provision.site import provision

    base = tmp_path_factory.mktemp("prov-chips")
    roots = {host: copy_snapshot_root(name, base / host) for host, name in SNAPSHOT_HOSTS.items()}
    packages = base / "packages"
    write(packages, "nvidia/container-toolkit/1.17.8/nvidia-container-toolkit_1.17.8-1_amd64.deb", "deb")
    write(packages, "ascend/firmware/7.7.0/Ascend-hdk-910b-npu-firmware_7.7.0.run", "run")
    write(packages, "ascend/docker-runtime/7.1.0/Ascend-docker-runtime_7.1.0_linux-aarch64.run", "run")
    inv = inventory_file(base / "hosts.yml", {h: {"appliance_root": str(r)} for h, r in roots.items()})
    before = {h: tree_state(r) for h, r in roots.items()}
    with data_dir_env(base / "data"):
        report = provision(inventory_file=inv, packages_dir=packages, check=True, tags=["chips"])
    after = {h: tree_state(r) for h, r in roots.items()}
    return {"report": report, "before": before, "after": after}


def _role_tasks(report, host: str, role: str) -> dict[str, str]:
    """task name -> status for the tasks of one role (its own, not those of the roles it includes)."""
    return {t.task: t.status for t in report.tasks if t.host == host and t.role == role}


def _host_tasks(report, host: str) -> dict[str, str]:
    return {t.task: t.status for t in report.tasks if t.host == host}


def _selected(report, host: str) -> set[str]:
    """Chip roles with at least one task that was not skipped on ``host``."""
    return {role for role in CHIP_ROLES if any(s != "skipped" for s in _role_tasks(report, host, role).values())}


def test_chip_check_run_succeeds_and_changes_nothing(chip_check):
    report = chip_check["report"]
    assert report.status == "successful", report.failure_block()
    assert report.check is True
    assert {h.host for h in report.hosts} == set(SNAPSHOT_HOSTS)
    assert chip_check["after"] == chip_check["before"]
    # --tags chips: base, docker and agent did not run; of docker only the entry point the chip
    # roles register their runtimes through
    assert not [t for t in report.tasks if t.role in ("base", "agent")]
    assert {t.task.split(" | ")[1] for t in report.tasks if t.role == "docker"} == {"Register container runtimes"}


def test_each_host_gets_exactly_its_chip_roles(chip_check):
    report = chip_check["report"]
    assert _selected(report, "nvidia-h200") == {"nvidia"}
    assert _selected(report, "ascend-910b") == {"ascend"}
    assert _selected(report, "amd-mi300x") == {"amd"}
    assert _selected(report, "mixed") == {"nvidia", "ascend"}
    assert _selected(report, "cpu-only") == set()
    for host in SNAPSHOT_HOSTS:                       # the others are present, and skipped
        others = [r for r in CHIP_ROLES if r not in _selected(report, host)]
        for role in others:
            tasks = _role_tasks(report, host, role)
            assert tasks and set(tasks.values()) == {"skipped"}, (host, role, tasks)


def test_fact_agrees_with_python_detection():
    """The playbook's PCI fact and appliance's detection choose the same roles on every snapshot."""
    import importlib.util

    from provsupport import NODES

    from appliance.inventory.detect import detect
    from appliance.paths import playbooks_dir
    from appliance.provision.site import chip_table, chips_of

    spec = importlib.util.spec_from_file_location("host_facts", playbooks_dir() / "library/appliance_host_facts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    names = sorted(p.name for p in NODES.iterdir() if (p / "root").is_dir())
    assert "h200-1gpu" in names
    assert len(names) >= 10
    for name in names:
        fact_chips, _ = mod.scan(str(snapshot_dir(name) / "root"), chip_table())
        assert fact_chips == chips_of(detect(snapshot=snapshot_dir(name), usage=False)), name


def test_nvidia_tasks_follow_the_installed_versions(chip_check):
    tasks = _host_tasks(chip_check["report"], "nvidia-h200")
    # driver 580.159.04 satisfies the catalog: nothing to install
    assert tasks["Packages | Installed version vs the compatibility matrix | nvidia driver"] == "ok"
    assert tasks["Packages | Copy the packages to the host | nvidia driver"] == "skipped"
    assert tasks["Packages | Record the installed version | nvidia driver"] == "skipped"
    # no toolkit on the snapshot: it would be copied and recorded (check mode: "changed")
    assert tasks["Packages | Copy the packages to the host | nvidia container-toolkit"] == "changed"
    assert tasks["Packages | Record the installed version | nvidia container-toolkit"] == "changed"
    assert tasks["Docker | Register container runtimes | nvidia"] == "ok"
    assert tasks["NVIDIA | Generate the CDI spec (nvidia-ctk)"] == "skipped"   # system-wide: off


def test_ascend_tasks_follow_the_installed_versions(chip_check):
    tasks = _host_tasks(chip_check["report"], "ascend-910b")
    assert tasks["Packages | Copy the packages to the host | ascend driver"] == "skipped"        # 25.5.1 installed
    assert tasks["Packages | Copy the packages to the host | ascend firmware"] == "changed"
    assert tasks["Packages | Copy the packages to the host | ascend docker-runtime"] == "changed"
    assert tasks["Ascend | Account record"] == "changed"
    assert tasks["Ascend | HwHiAiUser user (the driver installer needs it)"] == "skipped"
    assert tasks["Docker | Register container runtimes | ascend"] == "ok"


def test_amd_tasks_follow_the_installed_versions(chip_check):
    tasks = _host_tasks(chip_check["report"], "amd-mi300x")
    assert tasks["Device groups | Account record | amd"] == "changed"
    assert tasks["Device groups | Add the appliance user to the groups | amd"] == "skipped"
    assert tasks["Packages | Installed version vs the compatibility matrix | amd driver"] == "ok"
    assert tasks["Packages | Copy the packages to the host | amd driver"] == "skipped"  # amdgpu 6.10.5 present
    assert not any(t.endswith("| amd container-toolkit") for t in tasks)       # optional, not asked for
    assert tasks["AMD | Register the amd container runtime for Docker"] == "skipped"    # no AMD runtime asked for
