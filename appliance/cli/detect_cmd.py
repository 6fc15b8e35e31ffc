"""``appliance detect`` and ``appliance snapshot``."""

from __future__ import annotations

import click

from appliance.cli.output import emit, warn


@click.command("detect")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--snapshot", "snapshot", type=click.Path(), default=None,
              help="Replay a node snapshot directory instead of this machine.")
@click.option("--no-usage", is_flag=True, help="Skip utilization/memory-used/temperature/power.")
def detect(as_json: bool, snapshot: str | None, no_usage: bool) -> None:
    """Detect the node: CPU, memory, disks and every accelerator."""
    from appliance.inventory.detect import detect as run_detect

    inv = run_detect(snapshot=snapshot, usage=not no_usage)
    for w in inv.warnings:
        warn(w)
    emit(inv, as_json, _render)


def _render(inv) -> None:
    from rich.table import Table

    from appliance.cli.output import console

    con = console()
    n = inv.node
    mem = f"{n.memory_mib // 1024} GiB" if n.memory_mib else "?"
    con.print(f"[bold]{n.hostname or '?'}[/]  {n.os or '?'}  kernel {n.kernel or '?'}  "
              f"{n.cpu_count or '?'}× {n.cpu_model or '?'}  {mem} RAM")
    if not inv.accelerators:
        con.print("No accelerators found (CPU-only node: the planner will use the cpu backend).")
    else:
        table = Table(box=None, pad_edge=False)
        for col in ("vendor", "#", "model", "pci", "memory", "driver", "runtime", "health"):
            table.add_column(col)
        for a in inv.accelerators:
            rt = f"{a.runtime.name} {a.runtime.version or '?'}" if a.runtime else "-"
            memory = f"{a.memory_mib} MiB" if a.memory_mib else "?"
            table.add_row(a.vendor, str(a.index), a.model, a.pci_bdf or "-", memory,
                          a.driver_version or "[yellow]none[/]", rt, a.health)
        con.print(table)
    for a in inv.accelerators:
        for hint in a.hints:
            con.print(f"[yellow]hint[/] {a.vendor}#{a.index}: {hint}")
