"""``appliance detect`` and ``appliance snapshot``.

Thin: parse options, call one library function, render. Imports stay light (no docker,
no ansible, no pynvml at import time) because ``appliance detect`` must start fast.

Hidden for tests and support: ``--root DIR`` (or ``APPLIANCE_HOST_ROOT``) makes the live
host read files under DIR instead of ``/`` (tools still run from ``PATH``; vendor libraries
such as NVML are skipped because they would describe this machine, not DIR).
"""

from __future__ import annotations

import click

from appliance.cli.output import emit, warn

_ROOT_HELP = "Read files under this root instead of / (tests and support)."


@click.command("detect")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--snapshot", "snapshot", type=click.Path(), default=None,
              help="Replay a node snapshot directory instead of this machine.")
@click.option("--no-usage", is_flag=True, help="Skip utilization/memory-used/temperature/power and free disk.")
@click.option("--root", "root", type=click.Path(), default=None, hidden=True, envvar="APPLIANCE_HOST_ROOT",
              help=_ROOT_HELP)
def detect(as_json: bool, snapshot: str | None, no_usage: bool, root: str | None) -> None:
    """Detect the node: CPU, memory, disks and every accelerator.

    Exit 0 even when a vendor probe fails (its error is in probes[] and a warning on
    stderr); exit 2 when --snapshot is missing or malformed.
    """
    host = None
    if not snapshot:
        from appliance.inventory.hostview import DOCKER_VERSION_ARGV, LiveHost

        host = LiveHost(root)
        host.prefetch(list(DOCKER_VERSION_ARGV))  # overlaps with the imports below
    from appliance.inventory.detect import detect as run_detect

    inv = run_detect(host, snapshot=snapshot, usage=not no_usage)
    for w in inv.warnings:
        warn(w)
    emit(inv, as_json, _render)


@click.command("snapshot")
@click.argument("directory", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@click.option("--root", "root", type=click.Path(), default=None, hidden=True, envvar="APPLIANCE_HOST_ROOT",
              help=_ROOT_HELP)
def snapshot(directory: str, as_json: bool, root: str | None) -> None:
    """Capture this node into DIRECTORY (new or empty): the files detection reads and
    every tool's output, replayable with `appliance detect --snapshot DIRECTORY`."""
    from appliance.inventory.snapshot import capture

    summary = capture(directory, root=root)
    for w in summary.warnings:
        warn(w)
    emit(summary, as_json, _render_summary)


def _render_summary(s) -> None:
    click.echo(f"snapshot written to {s.directory}: {s.files} file(s) under root/, {s.commands} command "
               f"output(s) under tool-output/, {s.accelerators} accelerator(s) seen, {s.seconds:.2f}s")
    click.echo(f"replay it with: appliance detect --snapshot {s.directory}")


def _mib(value: int | None) -> str:
    if value is None:
        return "?"
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value} MiB"


def _render(inv) -> None:
    from rich.markup import escape
    from rich.table import Table

    from appliance.cli.output import console

    con = console()
    n = inv.node
    engine = n.container_engine
    docker = (f"docker {engine.version}" if engine.version else "docker (engine not reachable)"
              if engine.present else "no docker")
    con.print(f"[bold]{escape(n.hostname or '?')}[/]  {escape(n.os or '?')}  kernel {escape(n.kernel or '?')}  "
              f"{n.arch or '?'}")
    con.print(f"CPU {n.cpu_count or '?'}× {escape(n.cpu_model or '?')}  RAM {_mib(n.memory_mib)}  {docker}")
    for d in n.disks:
        free = f", {_mib(d.free_mib)} free" if d.free_mib is not None else ""
        con.print(f"disk {escape(d.mountpoint)} ({escape(d.device or '?')}, {d.fstype}) {_mib(d.total_mib)}{free}")
    if not inv.accelerators:
        con.print("No accelerators found (CPU-only node: the planner will use the cpu backend).")
    else:
        table = Table(box=None, pad_edge=False, show_edge=False)
        for col in ("vendor", "index", "model", "memory", "driver", "runtime", "health", "hints"):
            table.add_column(col, no_wrap=col not in ("model", "runtime"))
        for a in inv.accelerators:
            rt = f"{a.runtime.name} {a.runtime.version or '?'}" if a.runtime else "-"
            health = {"ok": "[green]ok[/]", "warning": "[yellow]warning[/]", "error": "[red]error[/]"}.get(
                a.health, a.health)
            table.add_row(a.vendor, str(a.index), escape(a.model), _mib(a.memory_mib),
                          escape(a.driver_version) if a.driver_version else "[yellow]none[/]", escape(rt), health,
                          str(len(a.hints)) if a.hints else "-")
        con.print(table)
        con.print()
        detail = Table(box=None, pad_edge=False, show_edge=False)
        for col in ("device", "pci", "pci id", "uuid"):
            detail.add_column(col, no_wrap=True)
        for a in inv.accelerators:
            detail.add_row(f"{a.vendor}#{a.index}", a.pci_bdf or "-", a.pci_id or "-", escape(a.uuid or "-"))
        con.print(detail)
        if any(a.usage for a in inv.accelerators):
            con.print()
            usage = Table(box=None, pad_edge=False, show_edge=False)
            for col in ("device", "numa", "util", "mem used", "temp", "power"):
                usage.add_column(col, no_wrap=True)
            for a in inv.accelerators:
                u = a.usage
                usage.add_row(
                    f"{a.vendor}#{a.index}", str(a.numa_node) if a.numa_node is not None else "-",
                    f"{u.utilization_pct:.0f}%" if u and u.utilization_pct is not None else "-",
                    _mib(u.memory_used_mib) if u and u.memory_used_mib is not None else "-",
                    f"{u.temperature_c:.0f}°C" if u and u.temperature_c is not None else "-",
                    f"{u.power_w:.0f} W" if u and u.power_w is not None else "-")
            con.print(usage)
    for a in inv.accelerators:
        for hint in a.hints:
            con.print(f"[yellow]hint[/] {a.vendor}#{a.index}: {escape(hint)}")
    failed = [p for p in inv.probes if p.error]
    if failed:
        con.print("probe errors: " + "; ".join(f"{p.driver}: {escape(p.error or '')}" for p in failed))
