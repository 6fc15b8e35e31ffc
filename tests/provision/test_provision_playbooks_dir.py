"""An upgrade provisions with the playbooks its bundle carries: ``provision(playbooks_dir=...)``."""

from __future__ import annotations

import pytest
from provsupport import data_dir_env

from appliance.errors import UsageError
from appliance.provision.site import provision

pytestmark = [pytest.mark.ansible]

SITE = """\
- name: a release's own site playbook
  hosts: all
  gather_facts: false
  tasks:
    - name: mark the root as provisioned by this release
      ansible.builtin.copy:
        dest: "{{ appliance_root }}/etc/appliance/release-marker"
        content: "release 2 playbooks\\n"
"""


def test_provision_runs_the_given_playbooks_directory(tmp_path):
    books = tmp_path / "release-2" / "playbooks"
    books.mkdir(parents=True)
    (books / "site.yml").write_text(SITE)
    root = tmp_path / "root"
    (root / "etc" / "appliance").mkdir(parents=True)
    with data_dir_env(tmp_path / "data"):
        report = provision(root=root, playbooks_dir=books)
    report.raise_for_failure()
    assert (root / "etc" / "appliance" / "release-marker").read_text() == "release 2 playbooks\n"
    assert report.changed == 1


def test_a_playbooks_directory_without_site_yml_is_refused(tmp_path):
    with data_dir_env(tmp_path / "data"), pytest.raises(UsageError, match="site.yml"):
        provision(root=tmp_path / "root", playbooks_dir=tmp_path)
