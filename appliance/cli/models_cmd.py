"""``appliance models import|list|verify|remove|export``: model weights on this box (docs/models.md)."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.cli.output import console, emit


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@click.group("models")
def models() -> None:
    """Import, verify and place model weights offline (the model store)."""


@models.command("import")
@click.argument("source")
@click.option("--model", "model_id", default=None, metavar="ID", help="The catalog model these are (default: found "
              "from the files' headers).")
@click.option("--precision", default=None, help="The catalog precision (default: read from the files).")
@click.option("--allow-pickle", is_flag=True, help="Accept pickle-based weights (*.bin, *.pt): loading them can run "
              "code; only for files you trust.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
def import_cmd(source: str, model_id: str | None, precision: str | None, allow_pickle: bool, as_json: bool,
               quiet: bool) -> None:
    """Import weights from SOURCE: a Hugging Face layout directory, a Hugging Face cache
    (models--org--name), a ModelScope download, a .gguf file, or an installed Python package that
    ships weights (a .gguf, or the Hugging Face layout, zipped or not). Checked against the catalog
    (one line naming the field on a mismatch), copied with progress, resumable, visible only when
    complete; a BERT encoder the catalog serves as GGUF is converted. Importing a model again
    replaces it. Exit 0 imported, 2 refused, 3 no space.
    """
    from appliance.cli.progress import byte_progress
    from appliance.deploy.weights import box_catalog
    from appliance.models.api import import_model

    with byte_progress(not (quiet or as_json)) as progress:
        res = import_model(source, box_catalog(), model=model_id, precision=precision, allow_pickle=allow_pickle,
                           progress=progress)
    for w in res.warnings:
        click.echo(f"warning: {w}", err=True)
    emit(res, as_json, lambda r: click.echo(
        f"imported {r.model} ({r.precision}, {r.layout}): {r.files} file(s), {_mb(r.bytes_total)} "
        f"({_mb(r.bytes_copied)} copied, {_mb(r.bytes_reused)} already in the store"
        f"{', resumed' if r.resumed else ''}) in {r.seconds:.1f}s\n  placed at {r.path}"
        + (f"\n  replaced the earlier import; freed {_mb(r.bytes_freed)}" if r.replaced else "")))


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(as_json: bool) -> None:
    """The models in the store: precision, size, files, when verified, which services use them."""
    from appliance.deploy.weights import box_catalog, in_use
    from appliance.models.api import list_models

    emit(list_models(box_catalog(), used_by=in_use()), as_json, _render_list)


def _render_list(r) -> None:
    from rich.table import Table

    if not r.models:
        click.echo(f"no models in the store ({r.store}); import one: appliance models import SOURCE")
        return
    t = Table(title="models", title_justify="left", pad_edge=False)
    for col in ("model", "precision", "size", "files", "verified", "used by", "source"):
        t.add_column(col)
    for m in r.models:
        t.add_row(m.model, m.precision, _mb(m.size_bytes), str(m.files), m.verified_at or "never",
                  ", ".join(m.used_by) or "-", m.source)
    console().print(t)
    click.echo(f"store {r.store}: {r.blobs} file(s), {_mb(r.blob_bytes)} on disk for {_mb(r.manifest_bytes)} of models")


@models.command("verify")
@click.argument("ref", required=False, metavar="[ID]")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
@click.pass_context
def verify_cmd(ctx: click.Context, ref: str | None, as_json: bool, quiet: bool) -> None:
    """Hash every file of ID (or of every model) against its manifest. Exit 1 naming the model
    and file when any is damaged."""
    from appliance.cli.progress import byte_progress
    from appliance.models.api import verify_models

    with byte_progress(not (quiet or as_json)) as progress:
        report = verify_models(ref, progress=progress)

    def render(r) -> None:
        for d in r.damaged:
            click.echo(f"damaged: {d.model} ({d.precision}) {d.file}: {d.problem}", err=True)
        click.echo(("ok" if r.ok else "DAMAGED") + f": {len(r.checked)} model(s), {_mb(r.bytes_hashed)} hashed in "
                   f"{r.seconds:.1f}s" + ("" if r.ok else " (fix: import the damaged model again)"))

    emit(report, as_json, render)
    ctx.exit(0 if report.ok else 1)


@models.command("remove")
@click.argument("ref", metavar="ID")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def remove_cmd(ref: str, yes: bool, as_json: bool) -> None:
    """Remove a model version from the store (refused while a service uses it). ID is
    ``model@precision`` when the model has several precisions in the store."""
    from appliance.cli.stack_cmd import _confirm
    from appliance.deploy.weights import box_catalog, in_use
    from appliance.models.api import removable, remove_model

    catalog, users = box_catalog(), in_use()
    m = removable(ref, used_by=users)  # a bad id, or one in use, fails before anything is asked
    _confirm(f"Remove {m.key} from the model store?", yes)
    res = remove_model(m.key, catalog, used_by=users)
    emit(res, as_json, lambda r: click.echo(f"removed {r['removed']}; freed {_mb(r['freed_bytes'])}"))


@models.command("export")
@click.argument("ref", metavar="ID")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
def export_cmd(ref: str, directory: Path, as_json: bool, quiet: bool) -> None:
    """Write ID's files in their own layout (Hugging Face or GGUF) into DIRECTORY, for another box.
    ID is ``model@precision`` when the model has several precisions in the store. Exit 2 when
    DIRECTORY is not empty or cannot be written (what was written is removed again)."""
    from appliance.cli.progress import byte_progress
    from appliance.models.api import export_model

    with byte_progress(not (quiet or as_json)) as progress:
        res = export_model(ref, directory, progress=progress)
    emit(res, as_json, lambda r: click.echo(f"exported {r['exported']}: {r['files']} file(s), {_mb(r['bytes'])} "
                                            f"into {r['directory']}"))
