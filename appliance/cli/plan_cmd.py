"""``appliance plan``: which engine image serves each model on this node, and why.

Thin: detect (live or from a snapshot), call :func:`appliance.planner.plan`, render. Exit 0
with a plan; 2 for bad input (unknown model/profile, bad snapshot or catalog); 3 when a
requested model fits nowhere -- the explanation is on stderr and, with ``--json``, the
partial plan (with every rejected alternative) on stdout. ``--inventory FILE --export k8s DIR``
also writes the cluster plan as Kubernetes manifests (:mod:`appliance.cluster.k8s`).
"""

from __future__ import annotations

import click

from appliance.cli.cluster_cmd import placement_options
from appliance.cli.output import console, emit_plan, warn


@click.command("plan")
@click.option("--snapshot", type=click.Path(), default=None, help="Plan for a node snapshot instead of this machine.")
@click.option("--models", default=None, help="Comma-separated model ids (default: the out-of-the-box set).")
@click.option("--profile", default="default", show_default=True, help="default | throughput | latency")
@click.option("--demo", is_flag=True, help="Plan the built-in CPU demo models.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable plan.")
@click.option("--explain", is_flag=True, help="Also show every rejected alternative and why.")
@click.option("--catalog", "catalog_dir", type=click.Path(), default=None, help="Catalog directory (default: shipped).")
@click.option("--license", "license_files", multiple=True, type=click.Path(),
              help="Check closed models against this license file instead of the installed ones (repeatable).")
@click.option("--inventory", "inventory_file", type=click.Path(), default=None,
              help="Plan across the nodes of this Ansible inventory (see `appliance cluster detect`).")
@placement_options
@click.option("--export", "export", nargs=2, type=(click.Choice(["k8s"]), click.Path(file_okay=False)),
              default=None, metavar="k8s DIR",
              help="With --inventory: also write the plan as Kubernetes manifests into DIR (docs/kubernetes.md).")
@click.option("--k8s-namespace", default=None, metavar="NS",
              help="With --export k8s: put the manifests in this namespace (default: none, `kubectl -n`).")
@click.option("--k8s-resource", "k8s_resources", multiple=True, metavar="VENDOR=NAME",
              help="With --export k8s: the device-plugin resource of a vendor's devices (repeatable).")
def plan(snapshot, models, profile, demo, as_json, explain, catalog_dir, license_files, inventory_file,
         policy, replicas, export, k8s_namespace, k8s_resources) -> None:
    """Plan engine, image, precision, devices and memory for each model; list rejected options."""
    from appliance.catalog import load_catalog
    from appliance.errors import UsageError
    from appliance.inventory.detect import detect
    from appliance.models.store import stored_models
    from appliance.planner import plan as make_plan

    if export is not None and inventory_file is None:
        # checked before anything is read: the export is of a cluster plan's placements
        raise UsageError("--export writes the manifests of a cluster plan", where="--export",
                         fix="add --inventory FILE (the Ansible inventory of the nodes)")
    if export is None and (k8s_namespace or k8s_resources):
        raise UsageError("--k8s-namespace and --k8s-resource shape the Kubernetes export",
                         where="--k8s-namespace" if k8s_namespace else "--k8s-resource",
                         fix="add --export k8s DIR")
    catalog = load_catalog(catalog_dir)
    if inventory_file is not None:
        if snapshot or demo:
            raise UsageError("--inventory plans the nodes of the inventory", where="--snapshot" if snapshot
                             else "--demo", fix="set appliance_snapshot per host in the inventory instead")
        from appliance.cli.cluster_cmd import plan_inventory

        plan_inventory(inventory_file, catalog, models, profile=profile, policy=policy, replicas=replicas,
                       as_json=as_json,
                       explain=explain, licenses=list(license_files) or None,
                       export_dir=export[1] if export else None, namespace=k8s_namespace,
                       resources=list(k8s_resources))
        return
    inventory = detect(snapshot=snapshot, usage=False)
    for w in inventory.warnings:
        warn(w)
    wanted = [m for m in models.split(",") if m.strip()] if models else None
    emit_plan(lambda: make_plan(inventory, catalog, models=wanted, profile=profile, demo=demo,
                                licenses=list(license_files) or None,
                                available=None if snapshot else stored_models()),
              as_json, _render, explain=explain)


def _render(p, explain: bool) -> None:
    from rich.table import Table

    con = console()
    table = Table(title=f"Plan ({p.profile}, catalog {p.catalog_version})", show_lines=False)
    for col in ("service", "model", "engine", "image", "precision", "TP", "devices", "MiB/device"):
        table.add_column(col, overflow="fold", no_wrap=col in ("service", "model"))
    for s in p.services:
        devices = ", ".join(f"{d.vendor}:{d.index}" for d in s.devices) or ("host RAM" if s.backend == "cpu" else "-")
        usable = f" of {s.memory.usable_mib:,}" if s.memory and s.memory.usable_mib else ""
        table.add_row(s.name, s.model, s.engine, s.image, s.precision, str(s.tensor_parallel), devices,
                      f"{s.memory_mib_per_device:,}{usable}")
    con.print(table)
    for a in p.apps:
        con.print(f"app {a.name}: " + ", ".join(f"{r} -> {n}" for r, n in a.bindings.items()))
    if explain:
        con.print("\n[bold]Explanation[/bold]")
        for line in p.explain:
            con.print(f"  {line}", markup=False)
        if p.rejected:
            con.print("\n[bold]Rejected alternatives[/bold]")
            for r in p.rejected:
                what = " ".join(x for x in (r.engine, r.precision,
                                            f"tp{r.tensor_parallel}" if r.tensor_parallel else None)
                                if x)
                con.print(f"  {r.model} {what} [{r.code}]: {r.reason}", markup=False)
    else:
        con.print(f"{len(p.rejected)} alternative(s) rejected; --explain lists them with reasons.")
