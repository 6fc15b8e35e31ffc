"""Rendering helpers shared by commands: JSON for machines, rich tables for people.

JSON output is deterministic (field order from the model, sorted dict keys where the
model holds dicts) so the same inputs give byte-identical output.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import click
from pydantic import BaseModel


def to_json(model: BaseModel | Any) -> str:
    if isinstance(model, BaseModel):
        data = model.model_dump(mode="json")
    else:
        data = model
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def emit(model: BaseModel, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``model`` as JSON, or call ``render(model)`` for the human view."""
    if as_json:
        click.echo(to_json(model), nl=False)
    else:
        render(model)


def console(stderr: bool = False):
    """A rich console (imported lazily: rich costs ~30 ms)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)
