"""Check mode on a node that has never been provisioned: it predicts, it never fails.

``appliance provision --check`` (and ``appliance init --dry-run``, which calls
``provision(..., check=True)``) runs with system-wide changes on. Check mode creates nothing,
so every task that needs an earlier task's effect -- the ``appliance`` account for
directory ownership, the agent's unit for ``systemctl`` -- must be predicted or skipped, not
fail ("chown failed: failed to look up user appliance", "Could not find the requested
service appliance-agent").

The node: a fresh temporary root, as a never-provisioned systemd host looks. Its data dir
already exists (on ``/`` appliance keeps its state and the Ansible run directories there, so
it always exists before the first provisioning), so do the model weights the plan points at.
No ``appliance`` user or group exists on this machine. systemd is a stand-in ``systemctl``
on PATH that knows ``docker.service`` only, answers the read-only queries and refuses (and
records) anything that would change a unit.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat

import pytest
from provsupport import data_dir_env, tree_state, write

pytestmark = [pytest.mark.ansible, pytest.mark.slow]

MODEL_DIR = "/var/lib/appliance/models/qwen2.5-7b-instruct"
READ_ONLY_VERBS = {"show", "is-enabled", "is-active", "list-unit-files"}

FAKE_SYSTEMCTL = """\
#!/bin/sh
# stand-in for systemd's systemctl: docker.service is loaded and running, no other unit exists
echo "$*" >> '{log}'
verb=$1
unit=""
for arg in "$@"; do
  case "$arg" in -*) ;; *) unit=$arg ;; esac
done
unit=${{unit%.service}}
case "$verb" in
  show)
    if [ "$unit" = docker ]; then
      printf 'Id=docker.service\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\nUnitFileState=enabled\\n'
    else
      printf 'Id=%s.service\\nLoadState=not-found\\nActiveState=inactive\\nSubState=dead\\n' "$unit"
    fi
    exit 0 ;;
  is-enabled)
    if [ "$unit" = docker ]; then echo enabled; exit 0; fi
    echo "Failed to get unit file state for $unit.service: No such file or directory" >&2
    exit 1 ;;
  is-active)
    if [ "$unit" = docker ]; then echo active; exit 0; fi
    echo inactive
    exit 3 ;;
  list-unit-files)
    if [ "$unit" = docker ]; then echo "docker.service enabled enabled"; exit 0; fi
    exit 1 ;;
esac
echo "stand-in systemctl: refusing to run '$*'" >&2
exit 1
"""


def _account_exists() -> tuple[bool, bool]:
    def exists(fn, name):
        try:
            fn(name)
            return True
        except KeyError:
            return False
    return exists(pwd.getpwnam, "appliance"), exists(grp.getgrnam, "appliance")


def _plan():
    from appliance.planner.models import HealthCheck, Plan, PlannedService

    svc = PlannedService(name="llm-qwen", role="chat", model="qwen2.5-7b-instruct",
                         served_model_name="qwen2.5-7b-instruct", engine="vllm", backend="cuda",
                         image="vllm/vllm-openai:v0.8.5", precision="bf16", port=8000,
                         health=HealthCheck(port=8000), model_path=MODEL_DIR)
    return Plan(services=[svc])


@pytest.fixture(scope="module")
def fresh_check(tmp_path_factory):
    from appliance.provision.site import provision

    accounts_before = _account_exists()
    if accounts_before != (False, False):
        pytest.skip("this machine has an 'appliance' user or group: it is not a never-provisioned node")
    base = tmp_path_factory.mktemp("prov-check-fresh")
    root = base / "root"
    (root / "run/systemd/system").mkdir(parents=True)          # systemd runs on this host
    (root / "var/lib/appliance").mkdir(parents=True)           # the data dir exists before provisioning
    write(root, MODEL_DIR + "/config.json", "{}\n")            # weights staged before provisioning
    bindir = base / "bin"
    bindir.mkdir()
    log = base / "systemctl.log"
    log.touch()
    systemctl = bindir / "systemctl"
    systemctl.write_text(FAKE_SYSTEMCTL.format(log=log))
    systemctl.chmod(systemctl.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    before = tree_state(root)
    with data_dir_env(base / "data"), pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
        report = provision(root=root, plan=_plan(), check=True, manage_system=True)
    return {"report": report, "root": root, "before": before, "after": tree_state(root),
            "accounts": (accounts_before, _account_exists()),
            "systemctl": [line.split() for line in log.read_text().splitlines()]}


def test_check_mode_on_a_fresh_node_succeeds(fresh_check):
    report = fresh_check["report"]
    assert report.status == "successful", report.failure_block()
    assert report.check is True and not report.failures


def test_check_mode_on_a_fresh_node_writes_nothing(fresh_check):
    assert fresh_check["after"] == fresh_check["before"]      # not a byte, mode or directory under the root
    before, after = fresh_check["accounts"]
    assert after == before == (False, False)                  # no user or group appeared on the machine
    calls = fresh_check["systemctl"]
    assert calls, "systemctl was never asked: the systemd tasks did not run"
    assert {c[0] for c in calls if c} <= READ_ONLY_VERBS, calls


def test_check_mode_predicts_what_a_real_run_would_change(fresh_check):
    tasks = {t.task: t.status for t in fresh_check["report"].tasks}
    # the account would be created, and the directories (the existing data and model dirs too)
    # handed to it: predicted as changes instead of a chown to an unknown user
    assert tasks["Base | Appliance group"] == tasks["Base | Appliance user"] == "changed"
    assert tasks["Base | Data, config, log and package cache directories"] == "changed"
    assert tasks["Docker | Merge daemon.json (log rotation, live-restore, data-root, runtimes)"] == "changed"
    assert tasks["Docker | Restart Docker"] == "changed"            # systemd knows docker.service
    # systemd does not know the agent's unit before a real run writes it: predicted, not asked
    assert tasks["Agent | Systemd unit for `appliance agent`"] == "changed"
    assert tasks["Agent | Enable and start the node agent"] == "skipped"
    assert tasks["Agent | A real run enables and starts the node agent (its unit is new)"] == "changed"
    assert tasks["Agent | Restart the node agent"] == "skipped"
    assert ["show", "docker"] in fresh_check["systemctl"]
    assert not [c for c in fresh_check["systemctl"] if "appliance-agent" in c]
