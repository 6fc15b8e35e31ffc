"""The pieces `logs` and `train logs` share (appliance.cli.streams): --tail checking, progress lines."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.cli.streams import parse_tail, progress_printer


@pytest.mark.parametrize("argv", [["logs", "gateway"], ["train", "logs", "no-such-job"]])
def test_bad_tail_is_one_line_exit_2(argv):
    res = subprocess.run([sys.executable, "-m", "appliance", *argv, "--tail", "ten"], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --tail: --tail must be a number or 'all', got 'ten'")
    assert "(fix: e.g. --tail " in lines[0]


def test_tail_values_and_progress_lines(capsys):
    assert parse_tail("all", "5") == "all" and parse_tail("12", "5") == 12
    progress_printer(False)("building x")
    progress_printer(True)("hidden")
    out = capsys.readouterr()
    assert out.out == "" and out.err == "… building x\n"
