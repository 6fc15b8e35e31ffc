"""Progress reporting for long byte-moving steps, decoupled from how it is shown.

Library code (bundles, the model store) reports bytes through this small protocol; the CLI
plugs in rich progress bars on a terminal and periodic lines (bytes, rate, ETA) in logs
(:mod:`appliance.cli.progress`); tests and scripts use :class:`NullProgress`. Implementations
must accept ``advance`` from several threads (blobs are hashed in parallel).
"""

from __future__ import annotations

from typing import Protocol


class ProgressTask(Protocol):
    def advance(self, n_bytes: int) -> None: ...

    def done(self) -> None: ...


class Progress(Protocol):
    def task(self, label: str, total_bytes: int) -> ProgressTask: ...

    def note(self, message: str) -> None: ...


class _NullTask:
    def advance(self, n_bytes: int) -> None:
        pass

    def done(self) -> None:
        pass


class NullProgress:
    def task(self, label: str, total_bytes: int) -> ProgressTask:
        return _NullTask()

    def note(self, message: str) -> None:
        pass
