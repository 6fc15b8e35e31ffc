"""Live progress of a playbook run, drawn with rich from the runner's event stream.

One line per task result that matters (changed, failed, unreachable, a debug message) and a
spinner naming the task that is running; ``ok``/``skipped`` results are only counted, so a
no-change run stays quiet. Everything goes to stderr: stdout is kept for ``--json``.
"""

from __future__ import annotations

from typing import Any

STYLES = {"ok": "green", "changed": "yellow", "failed": "bold red", "skipped": "dim", "unreachable": "bold red"}


class RichProgress:
    """Context manager usable as the ``progress`` callback of :func:`appliance.provision.site.provision`."""

    def __init__(self, console, *, show_ok: bool = False, show_diff: bool = False):
        self.console = console
        self.show_ok = show_ok
        self.show_diff = show_diff
        self._status = None
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "RichProgress":
        self._status = self.console.status("starting Ansible ...")
        self._status.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)
            self._status = None

    def __call__(self, kind: str, data: Any) -> None:
        from rich.markup import escape

        if kind == "task" and self._status is not None:
            self._status.update(f"[bold]{escape(str(data.get('task') or ''))}[/]")
        elif kind == "result":
            self.counts[data.status] = self.counts.get(data.status, 0) + 1
            if data.ignored:
                return
            if data.status in ("changed", "failed", "unreachable") or data.message or (
                    self.show_ok and data.status == "ok"):
                style = STYLES[data.status]
                line = f"[{style}]{data.status:>9}[/] {escape(data.host)}  {escape(data.task)}"
                if data.message and data.status not in ("failed", "unreachable"):
                    line += f"\n          [dim]{escape(data.message)}[/]"
                self.console.print(line, soft_wrap=True)
                if self.show_diff and data.diff:
                    self.console.print(escape(data.diff.rstrip()), style="dim", highlight=False, soft_wrap=True)
