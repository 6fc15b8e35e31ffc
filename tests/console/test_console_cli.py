"""``appliance console`` as a command: bad options are one line and exit 2; ``--wait`` waits."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.stack_support import run_cli


def test_bad_options_are_one_line_and_exit_2():
    for args, where in ((["--port", "0"], "--port"), (["--port", "70000"], "--port"),
                        (["--bind", "not-an-address"], "--bind"), (["--bind", "203.0.113.77"], "--bind"),
                        (["--gateway-url", "ftp://box"], "--gateway-url")):
        res = run_cli("console", *args, timeout=60)
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {where}:") and "Traceback" not in res.stderr


def test_without_an_installed_gateway_it_says_so_or_waits_with_wait():
    res = run_cli("console", timeout=60)
    assert res.returncode == 2 and "no gateway is installed" in res.stderr and "appliance init" in res.stderr
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "console", "--wait", "--port", "18070"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        time.sleep(3)
        assert proc.poll() is None  # still waiting for `appliance init`
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "waiting for `appliance init`" in err
