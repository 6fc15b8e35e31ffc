"""The real site playbook through ansible-runner against localhost, into a temporary root.

One module-scoped sequence (Ansible runs are slow on a small shared machine): check mode on a
fresh root, a first real run, then a second run through the CLI. Assertions are split into
tests but share those three runs.

The check-mode run has system-wide changes switched ON (users, groups, sysctl, systemctl):
check mode must change nothing anyway, neither under the root nor on the machine.
"""

from __future__ import annotations

import grp
import json
import pwd
from pathlib import Path

import pytest
from provsupport import data_dir_env, run_cli, tree_state, write

pytestmark = [pytest.mark.ansible, pytest.mark.slow]

ADMIN_DAEMON_JSON = {
    "registry-mirrors": ["https://mirror.example.internal"],
    "log-driver": "local",                       # owned: replaced by json-file
    "log-opts": {"compress": "true"},            # unowned sub-key: kept
    "runtimes": {"custom": {"path": "/usr/bin/custom-runtime"}},
    "insecure-registries": ["10.0.0.5:5000"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from appliance.provision.site import provision

    base = tmp_path_factory.mktemp("prov-local")
    root = base / "root"
    write(root, "/etc/docker/daemon.json", json.dumps(ADMIN_DAEMON_JSON, indent=4))
    write(root, "/etc/unrelated.conf", "keep me\n")
    with data_dir_env(base / "data"):
        before = tree_state(root)
        accounts_before = _accounts()
        check = provision(root=root, check=True, manage_system=True)
        accounts_after = _accounts()
        after_check = tree_state(root)
        first = provision(root=root, plan=_plan())
        cli = run_cli("provision", "--root", str(root), "--json")
    return {"root": root, "before": before, "check": check, "after_check": after_check,
            "accounts": (accounts_before, accounts_after), "first": first, "cli": cli, "data": base / "data"}


MODEL_DIR = "/var/lib/appliance/models/qwen2.5-7b-instruct"


def _plan():
    """A one-service plan: provisioning creates its model directory."""
    from appliance.planner.models import HealthCheck, Plan, PlannedService

    svc = PlannedService(name="llm-qwen", role="chat", model="qwen2.5-7b-instruct",
                         served_model_name="qwen2.5-7b-instruct", engine="vllm", backend="cuda",
                         image="vllm/vllm-openai:v0.8.5", precision="bf16", port=8000,
                         health=HealthCheck(port=8000), model_path=MODEL_DIR)
    return Plan(services=[svc])


def _accounts() -> tuple[bool, bool]:
    """Whether the appliance user and group exist on this machine."""
    def exists(fn, name):
        try:
            fn(name)
            return True
        except KeyError:
            return False
    return exists(pwd.getpwnam, "appliance"), exists(grp.getgrnam, "appliance")


def test_check_mode_reports_changes_but_changes_nothing(runs):
    check = runs["check"]
    assert check.status == "successful", check.failure_block()
    assert check.check is True
    assert check.changed > 0                      # it says what it would change ...
    assert runs["after_check"] == runs["before"]  # ... and the root is byte for byte the same
    before, after = runs["accounts"]
    assert after == before                        # ... and no user or group appeared on the machine
    tasks = {t.task: t.status for t in check.tasks}
    if before == (False, False):                  # the system tasks were selected (would create)
        assert tasks["Base | Appliance group"] == "changed" and tasks["Base | Appliance user"] == "changed"
    merge = next(t for t in check.tasks if t.task.startswith("Docker | Merge daemon.json"))
    assert merge.status == "changed"
    assert merge.diff and '+  "live-restore": true' in merge.diff


def test_first_run_changes_and_second_run_changes_nothing(runs):
    first = runs["first"]
    assert first.status == "successful", first.failure_block()
    assert first.host("localhost").changed >= 5
    cli = runs["cli"]
    assert cli.returncode == 0, cli.stderr
    second = json.loads(cli.stdout)
    assert second["status"] == "successful"
    (host,) = second["hosts"]
    assert host["host"] == "localhost"
    assert host["changed"] == 0 and host["failed"] == 0
    assert host["ok"] > 0
    assert not [t for t in second["tasks"] if t["status"] == "changed"]


def test_daemon_json_merged_keeping_unrelated_keys(runs):
    root: Path = runs["root"]
    data = json.loads((root / "etc/docker/daemon.json").read_text())
    assert data["registry-mirrors"] == ADMIN_DAEMON_JSON["registry-mirrors"]
    assert data["insecure-registries"] == ADMIN_DAEMON_JSON["insecure-registries"]
    assert data["runtimes"] == {"custom": {"path": "/usr/bin/custom-runtime"}}  # no chip here: no runtime added
    assert data["log-driver"] == "json-file"
    assert data["log-opts"] == {"compress": "true", "max-size": "100m", "max-file": "5"}
    assert data["live-restore"] is True
    assert "data-root" not in data                 # not asked for: left alone
    backups = list((root / "etc/docker").glob("daemon.json.*.bak"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == ADMIN_DAEMON_JSON
    assert (root / "etc/unrelated.conf").read_text() == "keep me\n"


def test_base_and_agent_files_are_under_the_root(runs):
    root: Path = runs["root"]
    sysctl = (root / "etc/sysctl.d/90-appliance.conf").read_text()
    assert "vm.max_map_count = 262144" in sysctl
    assert "appliance soft nofile 1048576" in (root / "etc/security/limits.d/90-appliance.conf").read_text()
    assert "user: appliance" in (root / "etc/appliance/accounts.d/base.yml").read_text()
    for d in ("var/lib/appliance", "var/log/appliance", "var/cache/appliance/packages", MODEL_DIR):
        assert (root / d.lstrip("/")).is_dir()      # MODEL_DIR: from the plan
    unit = (root / "etc/systemd/system/appliance-agent.service").read_text()
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_line.endswith(" agent")
    assert "WantedBy=multi-user.target" in unit
    console = (root / "etc/systemd/system/appliance-console.service").read_text()
    assert next(line for line in console.splitlines() if line.startswith("ExecStart=")).endswith(" console --wait")
    # system-wide effects were off: the tasks that would touch the real system were skipped
    skipped = {t.task for t in runs["first"].tasks if t.status == "skipped"}
    assert {"Base | Appliance group", "Base | Appliance user", "Agent | Enable and start the node agent",
            "Console | Enable and start the admin console"} <= skipped


def test_each_run_keeps_its_artifacts(runs):
    for report in (runs["check"], runs["first"]):
        artifacts = Path(report.artifacts_dir)
        assert artifacts.is_dir() and str(artifacts).startswith(str(runs["data"] / "ansible"))
        assert (artifacts / "stdout").stat().st_size > 0
        assert len(list((artifacts / "job_events").glob("*.json"))) > 10
        saved = json.loads((artifacts.parent.parent / "report.json").read_text())
        assert saved["run_id"] == report.run_id and saved["status"] == "successful"
    assert runs["check"].run_id != runs["first"].run_id
    # the extra vars of the run are kept too: chip table from the registry, matrix, plan
    import yaml

    from chip_drivers import DRIVERS

    extravars = yaml.safe_load((Path(runs["first"].artifacts_dir).parent.parent / "env/extravars").read_text())
    assert [r["role"] for r in extravars["appliance_chip_table"]] == [d.provision_role for d in DRIVERS]
    assert extravars["appliance_model_dirs"] == [MODEL_DIR]
    assert extravars["appliance_plan_hash"] == _plan().compute_hash()
    assert extravars["appliance_components"]["nvidia"]["driver"]["source"].startswith("catalog")
