"""``appliance status [--json] [--watch N] [--snapshot DIR]``: the box at a glance.

Thin: options -> :func:`appliance.status.collect_status` -> render. Exit codes (also for
monitoring scripts): 0 healthy, 1 degraded, 2 cannot tell (Docker unreachable, or nothing
installed). When Docker cannot be reached the human view is exactly one line on stderr;
``--json`` still prints the whole report (with that line on stderr as well).
"""

from __future__ import annotations

import time

import click

from appliance.cli.output import console, to_json

_COLOURS = {"healthy": "green", "degraded": "red", "unknown": "yellow", "not_installed": "yellow"}
_SEVERITY = {"error": "red", "warning": "yellow", "info": "cyan"}
WIDE_COLUMNS = 160


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report (schema appliance-status/1).")
@click.option("--watch", "watch_s", type=click.FloatRange(min=0.5), default=None, metavar="N",
              help="Refresh every N seconds until Ctrl-C (with --json: one JSON document per line).")
@click.option("--snapshot", type=click.Path(exists=True, file_okay=False), default=None,
              help="Take accelerators and node facts from a node snapshot directory (support, tests).")
@click.option("--inventory", "inventory_file", type=click.Path(), default=None,
              help="The cluster of this Ansible inventory: every node's status, problems naming the node.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch_s: float | None, snapshot: str | None,
           inventory_file: str | None) -> None:
    """Show the health of the box: release, node, accelerators, services, models, problems
    with fixes, the last upgrade and the endpoints.

    Exit 0 healthy, 1 degraded (problems listed with a fix), 2 cannot tell (Docker
    unreachable, or nothing installed yet).
    """
    if inventory_file is not None:
        _cluster(ctx, inventory_file, as_json)
        return
    from appliance.status import collect_status

    if watch_s is None:
        report = collect_status(snapshot=snapshot)
        _show(report, as_json)
        ctx.exit(report.exit_code)
    code = 2
    try:
        while True:
            start = time.monotonic()
            report = collect_status(snapshot=snapshot)
            code = report.exit_code
            if as_json:
                click.echo(report.model_dump_json())
            else:
                con = console()
                con.clear()
                _show(report, False)
                con.print(f"[dim]refreshing every {watch_s:g}s; Ctrl-C to stop[/dim]")
            time.sleep(max(0.0, watch_s - (time.monotonic() - start)))
    except KeyboardInterrupt:
        pass
    ctx.exit(code)


def _show(report, as_json: bool) -> None:
    unreachable = next((p for p in report.problems if p.code == "docker_unreachable"), None)
    if unreachable is not None:
        click.echo(f"error: {unreachable.subject}: {unreachable.message} (fix: {unreachable.fix})", err=True)
    if as_json:
        click.echo(to_json(report), nl=False)
    elif unreachable is None:
        render(report)


# ---- the human view ------------------------------------------------------------------------
def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


def _num(value: float | None, unit: str, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value) + unit


def _duration(seconds: int | None) -> str:
    """3d4h, 2h5m, 7m12s, 40s (two units at most)."""
    if seconds is None:
        return "-"
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for i, (unit, size) in enumerate(units[:-1]):
        if seconds >= size:
            small, small_size = units[i + 1]
            rest = seconds % size // small_size
            return f"{seconds // size}{unit}" + (f"{rest}{small}" if rest else "")
    return f"{seconds}s"


def render(r) -> None:
    from rich.table import Table

    con = console()
    if not con.is_terminal and con.width < WIDE_COLUMNS:
        con.width = WIDE_COLUMNS  # piped or captured: do not squeeze model names into 80 columns
    colour = _COLOURS[r.status]
    head = f"[bold {colour}]{r.status.upper().replace('_', ' ')}[/bold {colour}]"
    if r.release:
        head += (f"  release {r.release.id} ({r.release.version or '?'}) since {r.release.since}"
                 + ("  [yellow]TEST stack (templated engine)[/yellow]" if r.release.demo else "")
                 + ("  [yellow]EVALUATION models (small)[/yellow]" if r.release.evaluation else ""))
    con.print(f"{head}  ·  appliance {r.appliance_version}  ·  instance {r.instance}")
    con.print(_node_line(r.node), soft_wrap=True)

    if r.accelerators:
        t = Table(title="accelerators", title_justify="left", pad_edge=False)
        for col in ("device", "model", "mem GiB used/total", "util", "temp", "power", "driver", "runtime",
                    "health", "services"):
            t.add_column(col)
        for a in r.accelerators:
            power = _num(a.power_w, "W") + (f"/{a.power_limit_w:.0f}W" if a.power_limit_w else "")
            t.add_row(f"{a.vendor}:{a.index}", a.model, f"{_mib(a.memory_used_mib)}/{_mib(a.memory_total_mib)}",
                      _num(a.utilization_pct, "%"), _num(a.temperature_c, "°C"), power, a.driver_version or "-",
                      a.runtime or "-", _health(a.health), ", ".join(a.services) or "-")
        con.print(t)
    else:
        con.print("accelerators: none (CPU only)")

    if r.services:
        t = Table(title="services", title_justify="left", pad_edge=False)
        for col in ("service", "state", "health", "uptime", "restarts", "devices", "endpoint", "image"):
            t.add_column(col)
        for s in r.services:
            state = s.state if s.ok or s.state == "unknown" else f"[red]{s.state}[/red]"
            restarts = "-" if s.restarts is None else str(s.restarts)
            if s.repairs:
                restarts += f" (+{s.repairs} by agent)"
            t.add_row(s.name, state, _health(s.health), _duration(s.uptime_s), restarts,
                      ", ".join(s.devices) or "cpu", s.endpoint or "-", s.image or "-")
        con.print(t)
    if r.models:
        con.print("models: " + ", ".join(f"{m.name} ({'ready' if m.ready else '[red]not ready[/red]'}"
                                          f"{', demo' if m.demo else ''}"
                                          f"{', small evaluation model' if m.evaluation else ''}{_weights(m)})"
                                          for m in r.models), soft_wrap=True)
        if any(m.evaluation for m in r.models):
            con.print("to serve a bigger model: appliance models import FILE.gguf --model ID, then "
                      "appliance init --no-demo --models ID --yes", soft_wrap=True)
    if r.endpoints.gateway or r.endpoints.apps:
        apps = "".join(f"   {n}: {u}" for n, u in r.endpoints.apps.items())
        con.print(f"gateway: {r.endpoints.gateway or '-'}" + apps, soft_wrap=True)
    if r.last_upgrade:
        u = r.last_upgrade
        con.print(f"last upgrade: {u.kind} {u.from_version or '-'} -> {u.to_version or '-'}: {u.status} "
                  f"(step {u.step}) at {u.updated_at}" + (f": {u.error}" if u.error else ""), soft_wrap=True)
    if r.problems:
        t = Table(title="problems", title_justify="left", pad_edge=False)
        for col in ("", "subject", "problem", "fix"):
            t.add_column(col)
        for p in r.problems:
            t.add_row(f"[{_SEVERITY[p.severity]}]{p.severity}[/{_SEVERITY[p.severity]}]", p.subject, p.message, p.fix)
        con.print(t)
    con.print(f"[{colour}]{r.summary}[/{colour}]", soft_wrap=True)


def _health(value: str | None) -> str:
    if value in (None, ""):
        return "-"
    colour = {"healthy": "green", "ok": "green", "starting": "yellow", "warning": "yellow"}.get(value, "red")
    if value == "unknown":
        colour = "dim"
    return f"[{colour}]{value}[/{colour}]"


def _node_line(n) -> str:
    parts = [f"node {n.hostname or '?'}" + (f" ({n.source})" if n.source != "live" else "")]
    if n.uptime_s is not None:
        parts.append(f"up {_duration(n.uptime_s)}")
    if n.cpu_count:
        parts.append(f"{n.cpu_count} CPUs" + (f", load {n.load_1m:.2f}" if n.load_1m is not None else ""))
    if n.memory_total_mib:
        avail = f"{_mib(n.memory_available_mib)} of " if n.memory_available_mib is not None else ""
        parts.append(f"memory {avail}{_mib(n.memory_total_mib)} GiB free" if avail else
                     f"memory {_mib(n.memory_total_mib)} GiB")
    for d in n.disks:
        parts.append(f"disk {d.path} {d.free_mib / 1024:.0f} GiB free ({d.used_pct:.0f}% used)")
    if n.docker.reachable:
        parts.append(f"docker {n.docker.version or 'up'}")
    if n.agent.last_event:
        parts.append(f"agent: {n.agent.last_event} ({n.agent.last_event_at})")
    return "  ·  ".join(parts)


def _weights(m) -> str:
    """The weights part of a model's line, only when it needs attention."""
    return f", weights {m.weights}" if m.weights not in (None, "in_store", "not_needed") else ""


def _cluster(ctx: click.Context, inventory_file: str, as_json: bool) -> None:
    """``status --inventory FILE`` (appliance.cluster.status): the nodes, their services and the
    problems with the node's name, same exit codes."""
    from appliance.cluster.status import cluster_status

    report = cluster_status(inventory_file)
    if as_json:
        click.echo(to_json(report), nl=False)
        ctx.exit(report.exit_code)
    from rich.table import Table

    con = console()
    con.print(f"[bold {_COLOURS.get(report.status, 'yellow')}]{report.status}[/]: {report.summary}")
    table = Table(title=f"nodes (head {report.head})", title_justify="left")
    for col in ("node", "address", "status", "services", "models"):
        table.add_column(col)
    for n in report.nodes:
        svc = ", ".join(f"{s['name']} {s.get('health') or s.get('state')}" for s in n.services) or "-"
        table.add_row(n.node + (" (head)" if n.head else ""), n.address, n.status, svc, ", ".join(n.models) or "-")
    con.print(table)
    for p in report.problems:
        con.print(f"[{_SEVERITY.get(p.severity, 'red')}]{p.severity}[/] {p.message}", soft_wrap=True)
        con.print(f"    fix: {p.fix}", soft_wrap=True, markup=False)
    ctx.exit(report.exit_code)
