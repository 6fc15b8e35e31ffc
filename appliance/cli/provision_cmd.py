"""``appliance preflight`` and ``appliance provision``."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.cli.output import emit


def _default_packages_dir() -> Path | None:
    """``<data dir>/packages`` (where an offline bundle stages driver packages), if present."""
    from appliance.paths import data_dir

    path = data_dir() / "packages"
    return path if path.is_dir() else None


@click.command("preflight")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--snapshot", type=click.Path(), default=None, help="Check a node snapshot instead of this machine.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Read host files under DIR (Docker and ports are still this machine's).")
@click.option("--images-mib", type=click.IntRange(min=0), default=0, show_default=True,
              help="Size of the images about to be loaded (free disk must be twice that).")
@click.option("--port", "ports", type=click.IntRange(1, 65535), multiple=True,
              help="A port that must be free (repeatable; default: the site's gateway and app ports and the "
                   "agent's metrics port; those this box's own services hold count as free).")
@click.option("--packages", type=click.Path(file_okay=False), default=None,
              help="Offline package directory (default: <data dir>/packages).")
@click.pass_context
def preflight(ctx: click.Context, as_json: bool, snapshot: str | None, root: str | None, images_mib: int,
              ports: tuple[int, ...], packages: str | None) -> None:
    """Check the host before anything changes. Exit 0 pass, 4 warning, 3 failure."""
    from appliance.deploy.checks import box_preflight
    from appliance.errors import UsageError

    if snapshot and root:
        raise UsageError("--snapshot and --root are exclusive", where="--root", fix="pass one of them")
    if root and not Path(root).is_dir():
        raise UsageError("root directory does not exist", where=root, fix="pass an existing directory")
    report = box_preflight(snapshot=snapshot, root=root, images_mib=images_mib, ports=list(ports) or None,
                           packages_dir=packages or _default_packages_dir())
    emit(report, as_json, _render_preflight)
    ctx.exit(report.exit_code)


def _render_preflight(report) -> None:
    from rich.markup import escape
    from rich.table import Table

    from appliance.cli.output import console

    styles = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
    table = Table(box=None, pad_edge=False, show_header=True)
    for col in ("rule", "status", "message"):
        table.add_column(col)
    for r in report.rules:
        text = escape(r.message) + (f"\n[dim]fix: {escape(r.fix)}[/]" if r.fix else "")
        table.add_row(r.id, f"[{styles[r.status]}]{r.status}[/]", text)
    con = console()
    con.print(table)
    con.print(f"preflight: [{styles[report.status]}]{report.status}[/] ({report.host}; exit {report.exit_code})")


@click.command("provision")
@click.option("--check", is_flag=True, help="Show what would change (with diffs); change nothing.")
@click.option("--tags", "tags", multiple=True, help="Only these roles/tags (comma-separated or repeated): "
              "base, chips, <chip>, docker, agent.")
@click.option("--skip-tags", "skip_tags", multiple=True, help="Skip these tags.")
@click.option("--inventory", "inventory_file", type=click.Path(dir_okay=False), default=None,
              help="Ansible inventory file: provision several nodes (default: this node).")
@click.option("--limit", default=None, help="Only these inventory hosts (Ansible --limit pattern).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Provision into DIR instead of / (this node; no system-wide changes).")
@click.option("--packages", type=click.Path(file_okay=False), default=None,
              help="Offline package directory <vendor>/<component>/<version>/ (default: <data dir>/packages).")
@click.option("--diff", "show_diff", is_flag=True, help="Print each change's diff (always shown with --check).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report on stdout.")
def provision(check: bool, tags: tuple[str, ...], skip_tags: tuple[str, ...], inventory_file: str | None,
              limit: str | None, root: str | None, packages: str | None, show_diff: bool, as_json: bool) -> None:
    """Prepare the host(s) with the Ansible playbooks (through ansible-runner)."""
    from appliance.cli.output import console
    from appliance.inventory.detect import detect
    from appliance.inventory.hostview import LiveHost
    from appliance.provision.progress import RichProgress
    from appliance.provision.site import provision as run_provision

    split = lambda values: [t.strip() for v in values for t in v.split(",") if t.strip()]  # noqa: E731
    inventory = None
    if inventory_file is None:
        inventory = detect(LiveHost(root or "/"), usage=False)
    with RichProgress(console(stderr=True), show_diff=check or show_diff) as progress:
        report = run_provision(inventory=inventory, inventory_file=inventory_file, root=root,
                               packages_dir=packages or _default_packages_dir(), check=check,
                               tags=split(tags), skip_tags=split(skip_tags), limit=limit, progress=progress)
    emit(report, as_json, _render_provision)
    report.raise_for_failure()


def _render_provision(report) -> None:
    from rich.markup import escape
    from rich.table import Table

    from appliance.cli.output import console

    con = console()
    table = Table(box=None, pad_edge=False)
    for col in ("host", "ok", "changed", "failed", "skipped", "unreachable"):
        table.add_column(col, justify="left" if col == "host" else "right")
    for h in report.hosts:
        table.add_row(escape(h.host), str(h.ok), f"[yellow]{h.changed}[/]" if h.changed else "0",
                      f"[red]{h.failed}[/]" if h.failed else "0", str(h.skipped),
                      f"[red]{h.unreachable}[/]" if h.unreachable else "0")
    con.print(table)
    mode = "check mode: nothing was changed; " if report.check else ""
    con.print(f"{mode}{report.status} in {report.seconds:.1f}s (Ansible start-up "
              f"{report.startup_s if report.startup_s is not None else '?'}s); run {report.run_id}")
    con.print(f"artifacts: {escape(report.artifacts_dir)}", soft_wrap=True)
    if report.status != "successful":
        # plain lines, never wrapped: paths and messages stay copy-pastable
        con.print(escape(report.failure_block()), style="red", soft_wrap=True)
