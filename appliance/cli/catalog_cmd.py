"""``appliance catalog validate|list``: check and browse ``images/catalog/*.yaml``.

``validate`` exits 0 with a summary, or 2 with one line naming file, line, dotted path and
the closest valid name. ``list`` shows engines (backend, images) or models (role, size,
precisions).
"""

from __future__ import annotations

import click

from appliance.cli.output import console, to_json


@click.group("catalog")
def catalog() -> None:
    """Inspect and validate the image/model catalog."""


@catalog.command("validate")
@click.option("--path", "path", type=click.Path(), default=None, help="Catalog directory (default: the shipped one).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def validate(path: str | None, as_json: bool) -> None:
    """Validate the catalog (schema, unknown keys, cross references)."""
    from appliance.catalog.loader import load_catalog

    cat = load_catalog(path, use_cache=False)
    summary = {"valid": True, "version": cat.version, "files": cat.files, "engines": len(cat.engines),
               "models": len(cat.models), "apps": len(cat.apps), "training": len(cat.training),
               "backends": sorted({e.backend for e in cat.engines.values()})}
    if as_json:
        click.echo(to_json(summary), nl=False)
    else:
        click.echo(f"catalog {cat.version} is valid: {summary['engines']} engines "
                   f"({len(summary['backends'])} backends), {summary['models']} models, {summary['apps']} apps, "
                   f"{summary['training']} training recipes ({', '.join(cat.files)})")


@catalog.command("list")
@click.argument("what", type=click.Choice(["engines", "models", "apps", "training"]), default="models")
@click.option("--path", "path", type=click.Path(), default=None, help="Catalog directory (default: the shipped one).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
def list_(what: str, path: str | None, as_json: bool) -> None:
    """List engines, models, apps or training recipes."""
    from rich.table import Table

    from appliance.catalog.loader import load_catalog

    cat = load_catalog(path)
    section = getattr(cat, what)
    if as_json:
        click.echo(to_json({k: v.model_dump(mode="json") for k, v in sorted(section.items())}), nl=False)
        return
    table = Table(title=f"{what} ({cat.version})")
    if what == "engines":
        cols = ("id", "backend", "service", "variants", "newest image", "roles")
        rows = [(k, e.backend, e.service, ",".join(e.constraints.variants or ["any"]), e.images[0].image,
                 ",".join(e.roles)) for k, e in sorted(section.items())]
    elif what == "models":
        cols = ("id", "role", "params", "layers", "heads/kv", "context", "precisions", "license")
        rows = [(k, m.role, f"{m.params / 1e9:.2f}B", str(m.layers), f"{m.attention_heads}/{m.kv_heads}",
                 f"{m.max_context:,}", ",".join(v.precision for v in m.variants),
                 ("closed" if m.closed else m.license) + (" (demo)" if m.demo else ""))
                for k, m in sorted(section.items())]
    elif what == "apps":
        cols = ("id", "image", "roles")
        rows = [(k, a.image, ",".join(r.role + ("" if r.required else "?") for r in a.roles))
                for k, a in sorted(section.items())]
    else:
        cols = ("id", "method", "backend", "framework", "image")
        rows = [(k, r.method, r.backend, r.framework, r.image) for k, r in sorted(section.items())]
    for col in cols:
        if col == "id":  # ids are what people copy: never wrapped
            table.add_column(col, no_wrap=True, min_width=max((len(r[0]) for r in rows), default=2))
        else:
            table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console().print(table)
