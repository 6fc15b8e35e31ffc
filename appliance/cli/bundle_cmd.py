"""`appliance bundle ...`, `appliance upgrade`, `appliance rollback`: thin wrappers over appliance.bundle.

Progress (bytes, rate, time left) goes to stderr -- bars on a terminal, periodic lines in a
log -- so ``--json`` output stays clean.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliance.cli.output import console, emit
from appliance.cli.streams import progress_printer


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _progress(enabled: bool = True):
    """Bars on a terminal; in logs, a line per step every few seconds (appliance.cli.progress)."""
    from appliance.cli.progress import byte_progress

    return byte_progress(enabled)


@click.group("bundle")
def bundle() -> None:
    """Create, verify and inspect offline bundles (see docs/bundle.md)."""


@bundle.command("keygen")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="where to write NAME.key and NAME.pub")
@click.option("--name", default="bundle-signing", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def keygen_cmd(out_dir: Path, name: str, as_json: bool) -> None:
    """Create an ed25519 signing key pair (keep the .key offline; install the .pub on nodes)."""
    from appliance.bundle.keys import keygen

    res = keygen(out_dir, name)
    emit(res, as_json, lambda r: click.echo(
        f"private key {r.private_key} (keep it offline, never on a node)\n"
        f"public key  {r.public_key} (key id {r.key_id}); on each node: appliance bundle trust {r.public_key}"))


@bundle.command("trust")
@click.argument("pubkey", type=click.Path(dir_okay=False, path_type=Path))
def trust_cmd(pubkey: Path) -> None:
    """Install a public key as trusted for bundles on this node."""
    from appliance.bundle.keys import trust_key

    k = trust_key(pubkey)
    click.echo(f"trusted key {k.key_id} installed at {k.path}")


@bundle.command("create")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", required=True, type=click.Path(dir_okay=False, path_type=Path), help="private key (.key)")
@click.option("--base", type=click.Path(dir_okay=False, path_type=Path),
              help="an older bundle: write a delta holding only the blobs it lacks")
@click.option("--json", "as_json", is_flag=True)
def create_cmd(spec: Path, out: Path, key: Path, base: Path | None, as_json: bool) -> None:
    """Build a signed bundle from a YAML SPEC (images from the local engine)."""
    from appliance.bundle.create import create_bundle

    with _progress(not as_json) as progress:
        res = create_bundle(spec, out, key, base=base, progress=progress)

    def render(r):
        kind = f"delta against {r.base_version}" if r.delta else "full"
        click.echo(f"wrote {r.file}: version {r.version} ({kind}), {len(r.images)} image(s), {r.files} file(s), "
                   f"{r.blobs_in_bundle}/{r.blobs} blobs, signed by {r.key_id}")
        if r.delta:
            click.echo(f"size {_mb(r.file_size_bytes)} (a full bundle would be {_mb(r.full_size_estimate_bytes)})")
        else:
            click.echo(f"size {_mb(r.file_size_bytes)}")

    emit(res, as_json, render)


@bundle.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pubkey", type=click.Path(dir_okay=False, path_type=Path),
              help="verify against this key instead of the node's trusted keys")
@click.option("--json", "as_json", is_flag=True)
def verify_cmd(file: Path, pubkey: Path | None, as_json: bool) -> None:
    """Check signature, structure and every blob's sha256 (exit 2 with one line if anything is wrong)."""
    from appliance.bundle.reader import verify_bundle

    with _progress(not as_json) as progress:
        res = verify_bundle(file, pubkey=pubkey, progress=progress)
    emit(res, as_json, lambda r: click.echo(
        f"ok: {r.file} version {r.version}{' (delta against ' + r.base_version + ')' if r.delta else ''}, "
        f"signed by {r.signer_key_id}; {r.blobs_in_bundle} blobs, {_mb(r.bytes_hashed)} hashed in {r.seconds:.2f}s "
        f"({r.throughput_mb_s:,.0f} MB/s)"))


@bundle.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pubkey", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def inspect_cmd(file: Path, pubkey: Path | None, as_json: bool) -> None:
    """Show what a bundle holds (does not hash blobs; reports the signature status)."""
    from appliance.bundle.summary import inspect_bundle

    emit(inspect_bundle(file, pubkey=pubkey), as_json, _render_inspect)


def _render_inspect(r) -> None:
    from rich.table import Table

    c = console()
    kind = f"delta against {r.base_version}" if r.delta else "full"
    click.echo(f"{r.product} {r.version} ({kind}), created {r.created}, "
               f"upgrades from: {', '.join(r.upgrades_from) or 'nothing (first install only)'}")
    click.echo(f"signature: {r.signature} - {r.signature_detail}")
    click.echo(f"file {_mb(r.file_size_bytes)}; {r.blobs_in_bundle}/{r.blobs} blobs in the bundle, "
               f"{_mb(r.bundled_bytes)} bundled, {_mb(r.unpacked_bytes)} unpacked, "
               f"{_mb(r.shared_layer_bytes_saved)} saved by shared layers")
    if r.images:
        t = Table("image", "id", "layers", "size", "in bundle")
        for i in r.images:
            t.add_row(i.ref, i.id[7:19], str(i.layers), _mb(i.size_bytes), _mb(i.bundled_bytes))
        c.print(t)
    if r.files:
        t = Table("files", "chip", "count", "size")
        for g in r.files:
            t.add_row(g.kind, g.chip or "", str(g.files), _mb(g.size_bytes))
        c.print(t)


def _confirm(question: str, yes: bool) -> None:
    from appliance.errors import UsageError

    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} needs confirmation", where="--yes",
                         fix="re-run with --yes (no terminal to ask on)")
    if not click.confirm(question, default=False):
        raise click.exceptions.Abort()


def _render_upgrade(r) -> None:
    if r.recovered:
        click.echo(f"recovered first: {r.recovered.message}")
    for s in r.phases:
        click.echo(f"  {s.name:<10} {s.seconds:7.2f}s  {s.detail}")
    for c in r.changes:
        if c.action != "keep":
            click.echo(f"  {c.action:<10} {c.target}" + (f"  ({c.detail})" if c.detail else ""))
    for note in r.cleanup:
        click.echo(f"  cleanup: {note}")
    for w in r.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"{r.kind} {r.from_version or '(nothing)'} -> {r.to_version}: {r.message}")


@click.command("upgrade")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--allow-downgrade", is_flag=True, help="apply an older (or the same) version on purpose")
@click.option("--pubkey", type=click.Path(dir_okay=False, path_type=Path),
              help="trust this key instead of the node's trusted keys")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.option("--inventory", "inventory_file", type=click.Path(), default=None,
              help="upgrade every node of this Ansible inventory, node by node (docs/cluster.md)")
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", "-q", is_flag=True, help="no progress output")
def upgrade(file: Path, allow_downgrade: bool, pubkey: Path | None, yes: bool, inventory_file: str | None,
            as_json: bool, quiet: bool) -> None:
    """Apply an offline bundle: verify everything, then stage, load, provision, switch
    blue/green and commit; any failure rolls back to the running release. The site
    configuration (ports, models, served fine-tuned models) is kept.

    Exit 0 upgraded, 1 failed and rolled back, 2 refused (nothing changed), 3 preflight failed.
    """
    if inventory_file is not None:
        return _upgrade_cluster(inventory_file, file, allow_downgrade=allow_downgrade, pubkey=pubkey, yes=yes,
                                as_json=as_json, quiet=quiet)
    from appliance.bundle.apply import recover
    from appliance.deploy.requests import run, upgrade_request
    from appliance.deploy.upgrade import preview

    recovered = recover(say=progress_printer(quiet or as_json))  # an interrupted operation first, then the policy
    pv = preview(file, pubkey=pubkey, allow_downgrade=allow_downgrade)
    _confirm(f"upgrade this node from {pv['from_version'] or '(nothing installed)'} to {pv['to_version']}?", yes)
    req = upgrade_request(str(file), allow_downgrade=allow_downgrade, pubkey=str(pubkey) if pubkey else None)
    with _progress(not (as_json or quiet)) as progress:
        res = run(req, say=progress_printer(quiet or as_json), progress=progress)
    if recovered is not None and res.recovered is None:
        res.recovered = recovered
    emit(res, as_json, _render_upgrade)


def _upgrade_cluster(inventory_file: str, file: Path, *, allow_downgrade: bool, pubkey, yes: bool, as_json: bool,
                     quiet: bool) -> None:
    """``upgrade --inventory``: each node's own upgrade, the workers one at a time, then the head;
    a node that fails stops it and the nodes already upgraded are rolled back (exit 1)."""
    from appliance.cluster.bringup import upgrade_cluster
    from appliance.errors import UsageError

    if pubkey is not None:
        raise UsageError("--pubkey applies to this node", where="--pubkey",
                         fix="install the vendor key on every node (appliance bundle trust) instead")
    _confirm(f"upgrade every node of {inventory_file} to {file.name}, node by node?", yes)
    res = upgrade_cluster(inventory_file, str(file), allow_downgrade=allow_downgrade,
                          say=progress_printer(quiet or as_json))

    def render(r) -> None:
        for n in r.nodes:
            click.echo(f"{n.node}: {n.state}" + (f" ({n.detail})" if n.detail else ""))
        click.echo("every node upgraded" if r.ok else "the upgrade failed; the nodes above say where it stopped")

    emit(res, as_json, render)
    if not res.ok:
        raise SystemExit(1)


@click.command("rollback")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", "-q", is_flag=True, help="no progress output")
def rollback(yes: bool, as_json: bool, quiet: bool) -> None:
    """Return to the previous release (its stack and site configuration; blue/green behind
    health gates, journaled)."""
    from appliance.bundle.apply import recover
    from appliance.deploy.requests import rollback_request, run
    from appliance.deploy.upgrade import rollback_target

    recover(say=progress_printer(quiet or as_json))
    cur, target = rollback_target()
    _confirm(f"roll back from {cur} to {target}?", yes)
    res = run(rollback_request(), say=progress_printer(quiet or as_json))
    emit(res, as_json, _render_upgrade)
