"""Preflight: every rule listed with status and hint; each rule made to fail (or warn) on purpose.

The host is a fake root written here (files under a directory; Docker and the network are
this machine's, reached for real): a healthy root passes every rule, then one thing at a
time is broken and the rule's status and the exit code (0 pass, 4 warn, 3 fail) are checked.
"""

from __future__ import annotations

import json
import socket

import pytest
from provsupport import add_pci, run_cli, write

RULES = ("os", "kernel", "cpu-memory", "disk", "docker", "cgroup", "ports", "time-sync",
         "accelerators", "driver-versions", "iommu-hugepages")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def healthy_root(root):
    """A host that passes every rule (with Docker reachable and the port free)."""
    write(root, "/etc/os-release", 'ID=ubuntu\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n')
    write(root, "/proc/sys/kernel/osrelease", "5.15.0-105-generic\n")
    write(root, "/proc/cpuinfo", "".join(f"processor\t: {i}\nmodel name\t: Test CPU\n\n" for i in range(16)))
    write(root, "/proc/meminfo", "MemTotal:       131072000 kB\nHugePages_Total:       0\n")
    write(root, "/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
    write(root, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
    write(root, "/run/systemd/timesync/synchronized", "")
    (root / "var/lib/docker").mkdir(parents=True)
    return root


@pytest.fixture
def root(tmp_path):
    return healthy_root(tmp_path / "root")


@pytest.fixture
def port():
    return _free_port()


# a test whose healthy root must pass the `docker` rule reaches the real engine (DOCKER_HOST)
needs_engine = pytest.mark.docker


def preflight(root, port, **kw):
    from appliance.provision.preflight import run_preflight

    return run_preflight(root=root, ports=[port], **kw)


def test_live_preflight_json_lists_every_rule_with_status_and_hint():
    res = run_cli("preflight", "--json")
    report = json.loads(res.stdout)
    assert [r["id"] for r in report["rules"]] == list(RULES)
    for rule in report["rules"]:
        assert rule["status"] in ("pass", "warn", "fail", "skip") and rule["message"]
        assert (rule["fix"] is not None) == (rule["status"] in ("warn", "fail")), rule
    assert res.returncode == {"pass": 0, "warn": 4, "fail": 3}[report["status"]]
    assert report["host"] == "live"


@needs_engine
def test_healthy_root_passes_every_rule_exit_0(root, port):
    res = run_cli("preflight", "--root", str(root), "--port", str(port), "--json")
    report = json.loads(res.stdout)
    assert {r["id"]: r["status"] for r in report["rules"]} == {r: "pass" for r in RULES}, res.stdout
    assert res.returncode == 0 and report["exit_code"] == 0


def test_human_output_shows_fix_hints(root, port):
    (root / "etc/os-release").unlink()
    res = run_cli("preflight", "--root", str(root), "--port", str(port))
    assert res.returncode == 3
    assert "os" in res.stdout and "fail" in res.stdout and "fix:" in res.stdout


def test_os_missing_fails_exit_3(root, port):
    (root / "etc/os-release").unlink()
    report = preflight(root, port)
    assert report.rule("os").status == "fail" and report.exit_code == 3
    write(root, "/etc/os-release", 'ID=gentoo\nVERSION_ID="2.15"\n')
    assert preflight(root, port).rule("os").status == "warn"


def test_old_kernel_fails(root, port):
    write(root, "/proc/sys/kernel/osrelease", "3.10.0-1160.el7.x86_64\n")
    report = preflight(root, port)
    assert report.rule("kernel").status == "fail" and report.exit_code == 3
    assert "4.18" in report.rule("kernel").message


@needs_engine
def test_too_little_memory_fails_and_few_cpus_warn(root, port):
    write(root, "/proc/meminfo", "MemTotal:        2048000 kB\n")
    report = preflight(root, port)
    assert report.rule("cpu-memory").status == "fail" and report.exit_code == 3
    write(root, "/proc/meminfo", "MemTotal:       131072000 kB\n")
    write(root, "/proc/cpuinfo", "processor\t: 0\n\nprocessor\t: 1\n\nprocessor\t: 2\n\nprocessor\t: 3\n")
    report = preflight(root, port)
    assert report.rule("cpu-memory").status == "warn" and report.exit_code == 4


def test_disk_smaller_than_twice_the_images_fails(root, port):
    report = preflight(root, port, images_mib=10**9)
    rule = report.rule("disk")
    assert rule.status == "fail" and report.exit_code == 3
    assert rule.details["needed_mib"] == 2 * 10**9 and rule.details["free_mib"] < rule.details["needed_mib"]
    assert preflight(root, port, images_mib=1).rule("disk").status == "pass"


def test_unreachable_docker_fails(root, port, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    res = run_cli("preflight", "--root", str(root), "--port", str(port), "--json",
                  env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    report = json.loads(res.stdout)
    docker = next(r for r in report["rules"] if r["id"] == "docker")
    assert docker["status"] == "fail" and "/nonexistent/docker.sock" in docker["message"]
    assert docker["fix"] and res.returncode == 3


@needs_engine
def test_missing_cgroup_fails_and_v1_warns(root, port):
    (root / "sys/fs/cgroup/cgroup.controllers").unlink()
    assert preflight(root, port).rule("cgroup").status == "fail"
    (root / "sys/fs/cgroup/memory").mkdir()
    report = preflight(root, port)
    assert report.rule("cgroup").status == "warn" and report.exit_code == 4


def test_busy_port_fails_unless_it_is_ours(root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        report = preflight(root, busy)
        assert report.rule("ports").status == "fail" and report.exit_code == 3
        assert report.rule("ports").details["busy"] == [busy]
        ours = preflight(root, busy, allowed_busy_ports={busy})
        assert ours.rule("ports").status == "pass"


@needs_engine
def test_no_time_sync_warns_exit_4(root, port):
    (root / "run/systemd/timesync/synchronized").unlink()
    res = run_cli("preflight", "--root", str(root), "--port", str(port), "--json")
    report = json.loads(res.stdout)
    rule = next(r for r in report["rules"] if r["id"] == "time-sync")
    assert rule["status"] == "warn" and rule["fix"]
    assert res.returncode == 4
    write(root, "/proc/4242/comm", "chronyd\n")      # a daemon, not yet synchronised
    assert "chronyd" in preflight(root, port).rule("time-sync").message


def nvidia_gpu(root, driver: str | None):
    add_pci(root, "0000:00:06.0", "10de", "2335", "030200")
    if driver:
        write(root, "/proc/modules", "nvidia 1 0 - Live 0x0\n")
        write(root, "/sys/module/nvidia/version", driver + "\n")
        write(root, "/proc/driver/nvidia/version",
              f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {driver}  Release Build\n")


def test_accelerator_without_driver_fails_or_warns_with_a_package(root, port, tmp_path):
    nvidia_gpu(root, driver=None)
    report = preflight(root, port)
    rule = report.rule("accelerators")
    assert rule.status == "fail" and "nvidia" in rule.message and report.exit_code == 3
    packages = tmp_path / "packages"
    write(packages, "nvidia/driver/580.95.05/NVIDIA-Linux-x86_64-580.95.05.run", "run")
    rule = preflight(root, port, packages_dir=packages).rule("accelerators")
    assert rule.status == "warn" and "580.95.05" in rule.message


def test_driver_outside_the_catalog_matrix_fails(root, port):
    nvidia_gpu(root, driver="470.57.02")
    report = preflight(root, port)
    rule = report.rule("driver-versions")
    assert rule.status == "fail" and "470.57.02" in rule.message and report.exit_code == 3
    assert report.rule("accelerators").status == "pass"


@needs_engine
def test_driver_inside_the_matrix_passes(root, port):
    nvidia_gpu(root, driver="580.159.04")
    report = preflight(root, port)
    assert report.rule("driver-versions").status == "pass"
    assert report.rule("accelerators").status == "pass"
    assert report.exit_code == 0


def test_gaudi_without_hugepages_fails_and_amd_without_iommu_pt_warns(root, port):
    add_pci(root, "0000:33:00.0", "1da3", "1020", "120000")
    write(root, "/proc/modules", "habanalabs 1 0 - Live 0x0\n")
    write(root, "/sys/module/habanalabs/version", "1.23.0\n")
    rule = preflight(root, port).rule("iommu-hugepages")
    assert rule.status == "fail" and "gaudi" in rule.message and "vm.nr_hugepages" in rule.fix
    write(root, "/proc/meminfo", "MemTotal:       131072000 kB\nHugePages_Total:    1024\n")
    assert preflight(root, port).rule("iommu-hugepages").status == "pass"

    amd = healthy_root(root.parent / "amd")
    add_pci(amd, "0000:11:00.0", "1002", "74a1", "120000")
    rule = preflight(amd, port).rule("iommu-hugepages")
    assert rule.status == "warn" and "iommu=pt" in rule.message
    write(amd, "/proc/cmdline", "ro quiet iommu=pt\n")
    assert preflight(amd, port).rule("iommu-hugepages").status == "pass"


def test_snapshot_preflight_skips_what_a_snapshot_cannot_show(h200_snapshot):
    res = run_cli("preflight", "--snapshot", str(h200_snapshot), "--json")
    report = json.loads(res.stdout)
    status = {r["id"]: r["status"] for r in report["rules"]}
    assert status["ports"] == status["disk"] == "skip"
    assert status["accelerators"] == status["driver-versions"] == "pass"
    assert res.returncode == {"pass": 0, "warn": 4, "fail": 3}[report["status"]]


@needs_engine
def test_raise_for_failure_is_for_init_and_upgrade(root, port):
    from appliance.errors import PreflightFailed

    preflight(root, port).raise_for_failure()        # all pass: no error
    write(root, "/proc/sys/kernel/osrelease", "3.10.0\n")
    with pytest.raises(PreflightFailed) as err:
        preflight(root, port).raise_for_failure()
    assert err.value.exit_code == 3 and err.value.where == "preflight kernel"


def test_bad_arguments_are_usage_errors(tmp_path):
    res = run_cli("preflight", "--root", str(tmp_path / "missing"))
    assert res.returncode == 2 and res.stderr.startswith("error: ")
