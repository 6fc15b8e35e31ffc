"""The CLI's contract: --version, --help, one-line errors with exit 2, --debug tracebacks."""

from __future__ import annotations

import subprocess
import sys

from appliance import __version__


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, env=env)


def test_version():
    res = run("--version")
    assert res.returncode == 0
    assert __version__ in res.stdout


def test_help_lists_commands_without_heavy_imports():
    code = ("import sys\nfrom appliance.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    rc = e.code\n"
            "bad = [m for m in ('docker', 'ansible_runner', 'pynvml') if m in sys.modules]\n"
            "print('HEAVY', bad)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "detect" in res.stdout
    assert "HEAVY []" in res.stdout


def test_bad_snapshot_is_one_line_exit_2(tmp_path):
    res = run("detect", "--snapshot", str(tmp_path / "missing"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.stderr
    assert "fix:" in lines[0]


def test_debug_shows_traceback(tmp_path):
    res = run("--debug", "detect", "--snapshot", str(tmp_path / "missing"))
    assert res.returncode != 0
    assert "Traceback" in res.stderr
