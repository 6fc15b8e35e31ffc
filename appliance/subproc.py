"""The one place appliance runs external programs.

Every call has a timeout; a program that hangs is killed (its whole process group) and
reported as ``timed_out``; a program that is not installed is reported as
``not_found`` rather than raising. Callers decide what a failure means.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field


@dataclass
class CommandResult:
    argv: list[str]
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    not_found: bool = False
    timed_out: bool = False
    error: str | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.not_found

    def describe_failure(self) -> str:
        cmd = " ".join(self.argv)
        if self.not_found:
            return f"{self.argv[0]} is not installed"
        if self.timed_out:
            return f"'{cmd}' timed out after {self.seconds:.1f}s and was killed"
        if self.error:
            return f"'{cmd}' failed: {self.error}"
        tail = (self.stderr or self.stdout).strip().splitlines()[-1:] or [""]
        return f"'{cmd}' exited {self.exit_code}: {tail[0][:200]}"


def which(program: str) -> str | None:
    return shutil.which(program)


def run(
    argv: list[str],
    timeout_s: float = 10.0,
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    input_text: str | None = None,
) -> CommandResult:
    """Run ``argv`` (no shell) with a hard timeout; never raises for tool failures."""
    start = time.monotonic()
    if which(argv[0]) is None and not os.path.isabs(argv[0]):
        return CommandResult(argv=list(argv), exit_code=None, not_found=True)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=env,
            cwd=cwd,
            start_new_session=True,  # so a timeout kills the tool and its children
        )
    except FileNotFoundError:
        return CommandResult(argv=list(argv), exit_code=None, not_found=True,
                             seconds=time.monotonic() - start)
    except OSError as exc:
        return CommandResult(argv=list(argv), exit_code=None, error=str(exc),
                             seconds=time.monotonic() - start)
    try:
        out, err = proc.communicate(input=input_text, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return CommandResult(argv=list(argv), exit_code=None, stdout=out or "", stderr=err or "",
                             seconds=time.monotonic() - start, timed_out=True)
    return CommandResult(argv=list(argv), exit_code=proc.returncode, stdout=out, stderr=err,
                         seconds=time.monotonic() - start)
