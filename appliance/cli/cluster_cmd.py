"""``appliance cluster detect`` and ``appliance plan --inventory``: a rack of boxes as one.

Thin: read the Ansible inventory (:func:`appliance.cluster.hosts.load_inventory`), gather or
read each node's inventory (:mod:`appliance.cluster.gather`), call
:func:`appliance.cluster.planner.plan_cluster`, render. Exit codes as ``plan``: 2 bad input,
3 a model fits nowhere on the cluster (the partial plan on stdout with ``--json``).
"""

from __future__ import annotations

import click

from appliance.cli.output import console, emit_plan, to_json


def placement_options(command):
    """``--policy`` and ``--replicas``: how ``plan --inventory`` and ``init --inventory`` place models."""
    command = click.option("--replicas", type=click.IntRange(1, 256), default=1, show_default=True,
                           help="With --inventory: serve each model on up to N different nodes (the gateway "
                                "takes turns).")(command)
    return click.option("--policy", type=click.Choice(["binpack", "spread"]), default="binpack", show_default=True,
                        help="With --inventory: fill the fullest node first (binpack) or the emptiest "
                             "(spread).")(command)


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
    from appliance.cluster.planner import accelerators_label, drivers_label

    for node in cluster_inv.nodes:
        inv = facts[node.name]
        table.add_row(node.name, "yes" if node.head else "", node.address, accelerators_label(inv),
                      drivers_label(inv) or "-")
    console().print(table)
    click.echo(f"kept in {nodes_dir()}; plan with `appliance plan --inventory {inventory_file}`")


def plan_inventory(inventory_file: str, catalog, models: str | None, *, profile: str, policy: str, as_json: bool,
                   replicas: int = 1,
                   explain: bool, licenses, export_dir: str | None = None, namespace: str | None = None,
                   resources: list[str] | None = None) -> None:
    """The cluster plan; with ``export_dir`` also its Kubernetes manifests.

    The manifests are made before anything is printed (an export that cannot be made -- an
    accelerator without a known device-plugin resource, a refused directory -- fails the command
    with nothing half done) and only for a complete plan: on exit 3 nothing is written. stdout
    stays the plan alone (with ``--json`` the same bytes as without ``--export``); the files
    written are listed after the tables, or on stderr with ``--json``."""
    from appliance.cluster.gather import known_facts
    from appliance.cluster.hosts import load_inventory
    from appliance.cluster.planner import plan_cluster

    exported: dict[str, dict[str, str]] = {}
    overrides = None
    if export_dir is not None:
        from appliance.cluster.k8s import check_export_dir, check_namespace, parse_resource_overrides

        overrides = parse_resource_overrides(resources or [])
        check_namespace(namespace)
        check_export_dir(export_dir)
    cluster_inv = load_inventory(inventory_file)
    facts = known_facts(cluster_inv)
    wanted = [m for m in models.split(",") if m.strip()] if models else None

    def make():
        p = plan_cluster(cluster_inv, facts, catalog, wanted, policy=policy, profile=profile, replicas=replicas,
                         licenses=licenses)
        if export_dir is not None:
            from appliance.cluster.k8s import export_k8s

            exported["files"] = export_k8s(p, catalog, namespace=namespace, resource_names=overrides)
        return p

    emit_plan(make, as_json, _render, explain=explain)
    if export_dir is not None:
        from appliance.cluster.k8s import write_export

        written = write_export(exported["files"], export_dir)
        for path in written:
            click.echo(f"wrote {path}", err=as_json)
        click.echo(f"apply with: kubectl apply -f {export_dir} (LeaderWorkerSet needs the LWS controller; "
                   "docs/kubernetes.md)" if written else f"no placements: nothing written to {export_dir}",
                   err=as_json)


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
