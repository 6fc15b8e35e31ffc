"""``appliance cluster detect`` and ``appliance plan --inventory``: a rack of boxes as one.

Thin: read the Ansible inventory (:func:`appliance.cluster.hosts.load_inventory`), gather or
read each node's inventory (:mod:`appliance.cluster.gather`), call
:func:`appliance.cluster.planner.plan_cluster`, render. Exit codes as ``plan``: 2 bad input,
3 a model fits nowhere on the cluster (the partial plan on stdout with ``--json``).
"""

from __future__ import annotations

import click

from appliance.cli.output import console, emit_plan, to_json


@click.group("cluster")
def cluster() -> None:
    """The nodes of an Ansible inventory as one appliance."""


@cluster.command("detect")
@click.option("--inventory", "inventory_file", type=click.Path(), required=True, help="Ansible inventory file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def detect(inventory_file: str, as_json: bool, quiet: bool) -> None:
    """Run `appliance detect` on every node through Ansible and keep the results for planning."""
    from appliance.cluster.gather import gather, nodes_dir
    from appliance.cluster.hosts import load_inventory

    cluster_inv = load_inventory(inventory_file)

    def progress(kind, data) -> None:
        if not quiet and kind == "result":
            click.echo(f"  {data.host}: {data.task} {data.status}", err=True)

    facts = gather(cluster_inv, progress=progress)
    if as_json:
        click.echo(to_json({"nodes": {n: inv.model_dump() for n, inv in facts.items()},
                            "kept_in": str(nodes_dir())}), nl=False)
        return
    from rich.table import Table

    table = Table(title=f"Cluster nodes ({inventory_file})")
    for col in ("node", "head", "address", "accelerators", "driver"):
        table.add_column(col)
    from appliance.cluster.planner import _accelerators, _drivers

    for node in cluster_inv.nodes:
        inv = facts[node.name]
        table.add_row(node.name, "yes" if node.head else "", node.address, _accelerators(inv), _drivers(inv) or "-")
    console().print(table)
    click.echo(f"kept in {nodes_dir()}; plan with `appliance plan --inventory {inventory_file}`")


def plan_inventory(inventory_file: str, catalog, models: str | None, *, profile: str, policy: str, as_json: bool,
                   explain: bool, licenses) -> None:
    from appliance.cluster.gather import known_facts
    from appliance.cluster.hosts import load_inventory
    from appliance.cluster.planner import plan_cluster
    cluster_inv = load_inventory(inventory_file)
    facts = known_facts(cluster_inv)
    wanted = [m for m in models.split(",") if m.strip()] if models else None
    emit_plan(lambda: plan_cluster(cluster_inv, facts, catalog, wanted, policy=policy, profile=profile,
                                   licenses=licenses), as_json, _render, explain=explain)


def _render(p, explain: bool) -> None:
    from rich.table import Table

    con = console()
    nodes = Table(title=f"Cluster ({p.policy}; head {p.head})")
    for col in ("node", "accelerators", "devices used", "driver"):
        nodes.add_column(col)
    for n in p.nodes:
        nodes.add_row(n.name + (" (head)" if n.head else ""), n.accelerators, f"{n.devices_used}/{n.devices}",
                      n.driver or "-")
    con.print(nodes)
    table = Table(title="Placements")
    for col in ("model", "nodes", "engine", "image", "precision", "parallel", "MiB/device"):
        table.add_column(col, overflow="fold")
    for pl in p.placements:
        par = f"tp{pl.tensor_parallel}" + (f" x pp{pl.pipeline_parallel}" if pl.pipeline_parallel > 1 else "")
        table.add_row(pl.model, ", ".join(pl.nodes), pl.engine, pl.image, pl.precision,
                      par + ("" if pl.mode == "node" else f" ({pl.mode})"), f"{pl.memory_mib_per_device:,}")
    con.print(table)
    for f in p.preflight:
        con.print(f"{f.severity}: {f.subject}: {f.message} (fix: {f.fix})", markup=False)
    if explain:
        con.print("\n[bold]Explanation[/bold]")
        for line in p.explain:
            con.print(f"  {line}", markup=False)
        for pl in p.placements:
            if pl.mode != "node":
                for part in pl.parts:
                    con.print(f"  {pl.service} on {part.node} ({part.role}): "
                              + " ".join(part.runtime_command + (["&&"] if part.runtime_command and part.command
                                                                  else []) + part.entrypoint * bool(part.command)
                                         + part.command), markup=False)
        if p.rejected:
            con.print("\n[bold]Rejected[/bold]")
            for r in p.rejected:
                con.print(f"  {r.model} [{r.code}]: {r.reason}", markup=False)
    else:
        con.print(f"{len(p.rejected)} rejection(s); --explain lists them with their numbers.")
