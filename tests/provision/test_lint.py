"""ansible-lint (profile ``production``, the repository's ``.ansible-lint``) finds nothing in playbooks/.

It runs as a process, from playbooks/ (where ansible.cfg puts playbooks/library on the module
path, so the project's own modules resolve), offline: it installs and downloads nothing and
does not look for a newer version. ``--strict`` makes warnings fail too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml
from provsupport import REPO

pytestmark = [pytest.mark.ansible, pytest.mark.slow]

PLAYBOOKS = REPO / "playbooks"
CONFIG = REPO / ".ansible-lint"
FINDING = re.compile(r"^\S+:\d+(:\d+)?: \S+")


def test_lint_config_is_production_and_silences_nothing():
    config = yaml.safe_load(CONFIG.read_text())
    assert config["profile"] == "production" and config["offline"] is True
    assert not {"skip_list", "warn_list", "mock_modules", "mock_roles"} & set(config)
    assert not list(REPO.glob(".ansible-lint-ignore")) and not list(PLAYBOOKS.rglob(".ansible-lint-ignore"))


def test_playbooks_pass_ansible_lint_production_profile():
    pytest.importorskip("ansiblelint", reason="ansible-lint is not installed (pip install -e '.[test]')")
    env = dict(os.environ)
    env.update({"ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"), "NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1"})
    res = subprocess.run(
        [sys.executable, "-m", "ansiblelint", "--offline", "--strict", "--nocolor", "-f", "pep8",
         "-c", str(CONFIG)],
        cwd=PLAYBOOKS, env=env, capture_output=True, text=True, timeout=600)
    output = res.stdout + res.stderr
    findings = [line for line in output.splitlines() if FINDING.match(line)]
    assert res.returncode == 0 and not findings, (
        f"ansible-lint exited {res.returncode} with {len(findings)} finding(s):\n"
        + "\n".join(findings or [output[-4000:]]))
    assert "Profile 'production' was required, and it passed" in output, output[-2000:]
