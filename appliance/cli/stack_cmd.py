"""``appliance init``, ``up``, ``down`` and ``logs``: the stack's lifecycle.

Thin: options -> one library call (:mod:`appliance.deploy` for init, :mod:`appliance.runtime.stack`
for up/down/logs) -> render. Progress lines go to stderr so ``--json`` stays
clean on stdout. A service that never becomes healthy prints its last log lines to stderr,
then the usual one-line error (exit 1).
"""

from __future__ import annotations

import sys

import click

from appliance.cli.cluster_cmd import placement_options
from appliance.cli.output import console, emit, warn
from appliance.cli.streams import parse_tail, progress_printer, write_log_stream


def _confirm(question: str, yes: bool) -> None:
    from appliance.errors import UsageError

    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} needs confirmation", where="--yes",
                         fix="re-run with --yes (no terminal to ask on)")
    if not click.confirm(question, default=False):
        raise click.exceptions.Abort()


def _show_unhealthy(exc) -> None:
    lines = getattr(exc, "log_lines", None)
    if lines is None:
        return
    click.echo(f"last log lines of {exc.service}:", err=True)
    for line in lines or ["(no output)"]:
        click.echo(f"    {line}", err=True)


def _split(values: tuple[str, ...]) -> list[str] | None:
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


@click.command("init")
@click.option("--models", multiple=True, metavar="ID[,ID...]",
              help="Models to serve ('default': the catalog's choice). Default: as recorded.")
@click.option("--bundle", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Install from an offline bundle (images, catalog).")
@click.option("--demo/--no-demo", default=None, help="The built-in evaluation stack: small real models from their "
              "Python packages on the CPU, nothing provisioned. Default: as recorded.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Print the plan and every change, change nothing.")
@click.option("--force", is_flag=True, help="Go on even when a preflight check fails.")
@click.option("--profile", default=None, help="Planner profile (default, throughput, latency). Default: as recorded.")
@click.option("--snapshot", type=click.Path(exists=True, file_okay=False), default=None, hidden=True,
              help="Plan for a node snapshot instead of this machine (dry runs, tests).")
@click.option("--bind", "bind_ip", default=None, envvar="APPLIANCE_BIND",
              help="Host address the gateway and apps listen on (0.0.0.0: every interface). "
                   "Default: as recorded, first 127.0.0.1.")
@click.option("--gateway-port", type=click.IntRange(1, 65535), default=None, envvar="APPLIANCE_GATEWAY_PORT",
              help="Host port of the gateway. Default: as recorded, first 8080.")
@click.option("--app-port-base", type=click.IntRange(1, 65535), default=None, envvar="APPLIANCE_APP_PORT_BASE",
              help="Host port of the first app, the others follow. Default: as recorded, first the catalog's ports.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None, metavar="PEM",
              help="Serve HTTPS with this certificate (with --tls-key). Without it, a bind address beyond loopback "
                   "gets a self-signed certificate whose fingerprint init prints.")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None, metavar="PEM",
              help="The private key of --tls-cert (unencrypted PEM).")
@click.option("--insecure-http", is_flag=True, default=None,
              help="Serve plain HTTP even beyond loopback (keys, passwords and sessions cross the network in clear).")
@click.option("--health-timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="How long to wait for each new service to become healthy (default: per service).")
@click.option("--create-only", is_flag=True,
              help="Create the containers without starting them (check device wiring, e.g. with --snapshot).")
@click.option("--inventory", "inventory_file", type=click.Path(), default=None,
              help="Bring the stack up across the nodes of this Ansible inventory (docs/cluster.md).")
@placement_options
@click.option("--cluster-worker", "cluster_worker", default=None, hidden=True, metavar="ADDRESS",
              help="(init --inventory) this node serves engines only, published on ADDRESS.")
@click.option("--engine-port-base", type=click.IntRange(1, 65535), default=None, hidden=True,
              help="(init --inventory) a worker's first engine host port.")
@click.option("--cluster-secrets", type=click.Path(), default=None, hidden=True,
              help="(init --inventory) a worker's engine secrets, from the controller.")
@click.option("--cluster-head", type=click.Path(), default=None, hidden=True, metavar="FILE",
              help="(init --inventory) this node's gateway also routes to the workers' engines in FILE.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def init(models, bundle, demo, yes, dry_run, force, profile, snapshot, bind_ip, gateway_port, app_port_base,
         tls_cert, tls_key, insecure_http, health_timeout, create_only, inventory_file, policy, replicas,
         cluster_worker,
         engine_port_base, cluster_secrets, cluster_head, as_json, quiet) -> None:
    """Install and start the whole stack: detect, preflight, plan, provision, images,
    start in dependency order, wait for health, record the release.

    Starts from the recorded site configuration (`appliance config show`): options you leave
    out keep their recorded values, and the ones you give are recorded (init says what they
    change). Safe to re-run: unchanged services are left alone; changed ones are replaced one
    by one (new container healthy first). Exit 0 ok, 1 a service failed (the previous release
    keeps running), 2 bad input, 3 preflight failed or no model fits.
    """
    from appliance.deploy.requests import init_request, run
    from appliance.runtime.converge import ServiceUnhealthy

    if inventory_file is not None:
        return _init_cluster(inventory_file, models=_split(models), demo=demo, policy=policy, replicas=replicas,
                             profile=profile,
                             bind_ip=bind_ip, insecure_http=bool(insecure_http), health_timeout=health_timeout,
                             yes=yes, as_json=as_json, quiet=quiet,
                             bundle=bundle,
                             refused=[n for n, v in (("--dry-run", dry_run), ("--snapshot", snapshot),
                                                     ("--create-only", create_only)) if v])
    cluster = _cluster_part(cluster_worker, engine_port_base, cluster_secrets, cluster_head)
    req = init_request(models=_split(models), demo=demo, profile=profile, bind_ip=bind_ip, gateway_port=gateway_port,
                       app_port_base=app_port_base, health_timeout_s=health_timeout, bundle=bundle,
                       dry_run=dry_run, force=force, create_only=create_only, snapshot=snapshot,
                       tls_cert=tls_cert, tls_key=tls_key, insecure_http=insecure_http, cluster=cluster)
    if not dry_run and not yes:
        _confirm("Install/update the appliance stack on this machine?", yes)
    for line in req.site_changes:
        click.echo(f"configuration: {line}", err=True)
    try:
        result = run(req, say=progress_printer(quiet))
    except ServiceUnhealthy as exc:
        _show_unhealthy(exc)
        raise
    for w in result.warnings:
        warn(w)
    admin = _first_admin(result)
    if admin is not None and cluster_head:  # started by the controller: its output is kept in Ansible's artifacts
        admin = admin.model_copy(update={"login_url": None, "message": f"sign in: appliance users login-link "
                                         f"{admin.user} on this node (the head)"})
    if as_json:  # the deploy result plus the first admin's one-time sign-in link (null when none was made)
        from appliance.cli.output import to_json

        click.echo(to_json(result.model_dump(mode="json") | {"login_link": admin.login_url if admin else None}),
                   nl=False)
        return
    _render_init(result)
    _render_sign_in(admin)


def _cluster_part(worker: str | None, port_base: int | None, secrets: str | None, head: str | None) -> dict | None:
    """This node's part of ``init --inventory`` (the hidden options the controller passes)."""
    from appliance.errors import UsageError

    if worker and head:
        raise UsageError("a node is either a cluster worker or the head", where="--cluster-worker/--cluster-head",
                         fix="run `appliance init --inventory FILE` on the controller")
    if worker:
        from appliance.cluster.node import import_worker_secrets
        from appliance.deploy.site import check_bind

        check_bind(worker, where="--cluster-worker")
        if secrets:
            import_worker_secrets(secrets)
        return {"cluster_role": "worker", "node_address": worker, "engine_port_base": port_base}
    if head:
        from appliance.cluster.node import import_remote_engines

        return {"cluster_role": "head", "remote_engines": [r.model_dump() for r in import_remote_engines(head)]}
    return None


def _init_cluster(inventory_file: str, *, models, demo, policy, replicas, profile, bind_ip, insecure_http,
                  health_timeout, yes,
                  as_json, quiet, bundle: str | None, refused: list[str]) -> None:
    from appliance.cluster.bringup import init_cluster
    from appliance.errors import UsageError

    if refused:
        raise UsageError(f"{refused[0]} does not apply to --inventory", where=refused[0],
                         fix="bring the cluster up with `appliance init --inventory FILE --yes` alone")
    if not yes:
        _confirm(f"Install/update the appliance stack on every node of {inventory_file}?", yes)
    say = progress_printer(quiet)
    result = init_cluster(inventory_file, models=models, demo=bool(demo), policy=policy, replicas=replicas,
                          profile=profile or "default",
                          bind_ip=bind_ip, insecure_http=insecure_http, health_timeout_s=health_timeout,
                          bundle=bundle, say=say)
    if as_json:
        from appliance.cli.output import to_json

        click.echo(to_json(result.model_dump(mode="json", exclude={"plan"})), nl=False)
        return
    con = console()
    for n in result.nodes:
        con.print(f"{n.node} ({n.role}): {', '.join(n.models) or 'gateway, console and state'}")
        for svc, url in n.engines.items():
            con.print(f"    {svc} at {url}")
    con.print(f"gateway: {result.gateway}")
    con.print(f"sign in: appliance users login-link admin (on {result.head})")


def _first_admin(result):
    """After a deploy that recorded a release with a gateway: the first admin (made now, with a
    one-time link, when the box has none). None for dry runs and create-only."""
    gateway = result.endpoints.get("gateway")
    if result.dry_run or result.release is None or not gateway:
        return None
    from appliance.gateway.users import ensure_first_admin

    return ensure_first_admin(base_url=gateway)


def _render_sign_in(admin) -> None:
    if admin is None:
        return
    con = console()
    if admin.login_url:
        con.print(f"[bold]sign in to the apps[/bold] as {admin.user} (one use, within 10 minutes):")
        con.print(f"  {admin.login_url}", soft_wrap=True, markup=False)
        con.print(f"  then set a password: appliance users passwd {admin.user}   "
                  f"(a new link: appliance users login-link {admin.user})", soft_wrap=True)
    else:
        con.print(admin.message, soft_wrap=True, markup=False)


def _render_init(r) -> None:
    from rich.table import Table

    con = console()
    title = ("DRY RUN: nothing was changed" if r.dry_run else f"release {r.release} is active" if r.release
             else "containers created, not started (no release recorded)")
    if r.plan is None or r.stack is None:
        con.print(f"[bold]{title}[/bold] (instance {r.instance})")
        return
    plan = Table(title=f"plan ({r.plan.profile}, {r.plan.plan_hash or ''})", title_justify="left")
    for col in ("service", "model", "engine", "image", "devices"):
        plan.add_column(col)
    for s in r.plan.services:
        devs = ", ".join(f"{d.vendor}:{d.index}" for d in s.devices) or "cpu"
        plan.add_row(s.name, s.served_model_name + (" (DEMO)" if s.demo else ""), s.engine, s.image, devs)
    con.print(plan)
    changes = Table(title="changes" if not r.dry_run else "changes it would make", title_justify="left")
    for col in ("action", "target", "detail"):
        changes.add_column(col)
    for c in r.changes:
        if c.action != "keep":
            changes.add_row(c.action, c.target, c.detail)
    kept = [c.target for c in r.changes if c.action == "keep"]
    if changes.row_count:
        con.print(changes)
    if kept:
        con.print(f"unchanged: {', '.join(kept)}")
    if not r.dry_run and r.phases:
        con.print("time: " + ", ".join(f"{p.name} {p.seconds:.2f}s" for p in r.phases))
    con.print(f"[bold]{title}[/bold] (instance {r.instance})")
    small = [s for s in r.plan.services if s.evaluation]
    if small:
        con.print(f"[yellow]Evaluation models: {', '.join(s.model for s in small)} are small real models for trying "
                  "the box, not for production answers.[/yellow]")
        con.print("[yellow]  Serve a bigger model: appliance models import FILE.gguf --model ID, then "
                  "appliance init --no-demo --models ID --yes (docs/demo.md)[/yellow]", soft_wrap=True)
    if any(s.demo for s in r.stack.services):
        con.print("[yellow]TEST stack: the templated engine returns canned answers, not a language model[/yellow]")
    for name, url in r.endpoints.items():
        con.print(f"  {name:<18} {url}")
    if r.next_steps and not r.dry_run:
        con.print("next:")
        for step in r.next_steps:
            con.print(f"  {step}", soft_wrap=True)


@click.command("up")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def up(as_json: bool, quiet: bool) -> None:
    """Start the recorded stack again (recreating missing containers, health-gated)."""
    from appliance.runtime.converge import ServiceUnhealthy
    from appliance.runtime.stack import up as run_up

    try:
        result = run_up(progress=progress_printer(quiet))
    except ServiceUnhealthy as exc:
        _show_unhealthy(exc)
        raise

    def render(res) -> None:
        started = [c.target for c in res.changes if c.action in ("start", "create", "replace")]
        kept = [c.target for c in res.changes if c.action == "keep"]
        click.echo(f"started: {', '.join(started) or 'nothing'}; already running: {', '.join(kept) or 'nothing'}")

    emit(result, as_json, render)


@click.command("down")
@click.option("--purge", is_flag=True, help="Remove every container, network and volume of this instance.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed for --purge without a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def down(purge: bool, yes: bool, as_json: bool) -> None:
    """Stop the stack (the agent will not restart it; `appliance up` does).

    With --purge, remove everything this instance created in Docker (containers, network,
    volumes -- app data included); images, keys and the state's history stay.
    """
    from appliance.runtime.stack import down as run_down

    if purge:
        _confirm("Remove every container, network and volume of this appliance instance (app data too)?", yes)
    summary = run_down(purge=purge)

    def render(s) -> None:
        if purge:
            click.echo(f"removed {len(s['removed_containers'])} container(s), {len(s['removed_networks'])} "
                       f"network(s), {len(s['removed_volumes'])} volume(s)")
        else:
            click.echo(f"stopped {len(s['stopped'])} container(s); start again with `appliance up`")

    emit(summary, as_json, render)


@click.command("logs")
@click.argument("service")
@click.option("--tail", "-n", default="100", show_default=True, help="Lines to show ('all' for everything).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
def logs(service: str, tail: str, follow: bool) -> None:
    """Show a service's logs (e.g. `appliance logs gateway`)."""
    from appliance.runtime.stack import service_logs

    write_log_stream(service_logs(service, tail=parse_tail(tail, "200"), follow=follow))
