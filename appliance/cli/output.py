"""Rendering helpers shared by commands: JSON for machines, rich tables for people.

JSON output is deterministic (field order from the model, sorted dict keys where the
model holds dicts) so the same inputs give byte-identical output.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import click


def to_json(model: Any) -> str:
    # duck-typed (no pydantic import here: this module is on `appliance detect`'s start-up path)
    if hasattr(model, "model_dump"):
        data = model.model_dump(mode="json")
    else:
        data = model
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def emit(model: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``model`` as JSON, or call ``render(model)`` for the human view."""
    if as_json:
        click.echo(to_json(model), nl=False)
    else:
        render(model)


def emit_plan(make: Callable[[], Any], as_json: bool, render: Callable[..., None], *, explain: bool) -> None:
    """A plan's output (``plan`` and ``plan --inventory``): the plan; or, when a model fits
    nowhere (exit 3), the partial plan -- as JSON, or the tables with the explanation -- before
    the error line."""
    from appliance.errors import NoFitError

    try:
        result = make()
    except NoFitError as exc:
        partial = getattr(exc, "plan", None)
        if partial is not None:
            if as_json:
                click.echo(to_json(partial), nl=False)
            else:
                render(partial, explain=True)
        raise
    if as_json:
        click.echo(to_json(result), nl=False)
    else:
        render(result, explain=explain)


def console(stderr: bool = False):
    """A rich console (imported lazily: rich costs ~30 ms)."""
    import os
    import sys

    from rich.console import Console

    # Piped or logged output has no terminal width; rich would then squeeze wide tables
    # into 80 columns, one letter per line. Use a wide fixed width unless COLUMNS says.
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty() and "COLUMNS" not in os.environ:
        width = 160
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def utc_time(ts: float | None, missing: str = "-") -> str:
    """A timestamp as the tables show it (``2026-12-02 07:10 UTC``), ``missing`` for none."""
    import time

    return missing if ts is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
