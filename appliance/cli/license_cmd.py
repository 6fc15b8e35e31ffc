"""``appliance license``: keys and licenses for closed models.

Vendor side: ``keygen`` (an ed25519 key pair), ``issue`` (sign a license). Box side:
``fingerprint`` (for node-locked licenses), ``verify FILE`` (exit 0 valid, 2 invalid with
the reason), ``install FILE`` (verify, then copy under ``<data_dir>/licenses/``), ``list``.
"""

from __future__ import annotations

import click

from appliance.cli.output import console, emit, to_json


@click.group("license")
def license_() -> None:
    """Issue and verify licenses for closed models."""


license = license_  # the registry's attribute name (appliance/cli/__init__.py)


def _fingerprint(snapshot: str | None) -> str:
    from appliance.inventory.detect import detect
    from appliance.licensing import node_fingerprint

    return node_fingerprint(detect(snapshot=snapshot, usage=False))


@license_.command("keygen")
@click.option("--out", "out_dir", type=click.Path(), required=True, help="Directory for license.key and license.pub.")
@click.option("--name", default="license", show_default=True, help="File name stem.")
def keygen(out_dir: str, name: str) -> None:
    """Generate an ed25519 signing key pair (vendor side; keep the .key secret)."""
    from appliance.licensing import generate_keypair

    info = generate_keypair(out_dir, name)
    click.echo(f"key {info['key_id']}: private {info['private_key']} (keep secret), public {info['public_key']} "
               "(install on boxes under <data_dir>/trust/license-keys/)")


@license_.command("issue")
@click.option("--key", "key_path", type=click.Path(), required=True, help="The vendor's private key (PEM).")
@click.option("--models", required=True, help="Comma-separated closed model ids.")
@click.option("--expires", required=True, help="Expiry: YYYY-MM-DD (midnight UTC) or ISO 8601.")
@click.option("--customer", required=True, help="Who the license is for.")
@click.option("--fingerprint", default=None, help="Lock to this node (from `appliance license fingerprint`).")
@click.option("--id", "license_id", default=None, help="License id (default: derived from the content).")
@click.option("--out", "out_path", type=click.Path(), required=True, help="Where to write the license file.")
def issue(key_path, models, expires, customer, fingerprint, license_id, out_path) -> None:
    """Sign a license for closed models (vendor side)."""
    from pathlib import Path

    from appliance.catalog import load_catalog
    from appliance.catalog.loader import unknown_name_error
    from appliance.errors import UsageError
    from appliance.licensing import issue as do_issue

    cat = load_catalog()
    ids = [m.strip() for m in models.split(",") if m.strip()]
    for mid in ids:
        if mid not in cat.models:
            raise unknown_name_error("model", mid, cat.models, where="--models")
        if not cat.models[mid].closed:
            raise UsageError(f"model '{mid}' is open and needs no license", where="--models",
                             fix="list closed models only: "
                             + ", ".join(sorted(m for m, s in cat.models.items() if s.closed)))
    lic = do_issue(key_path, ids, expires, customer, node_fingerprint=fingerprint, license_id=license_id)
    Path(out_path).write_text(to_json(lic), encoding="utf-8")
    click.echo(f"wrote {out_path}: {lic.payload.license_id} for {', '.join(lic.payload.models)} "
               f"until {lic.payload.expires_at}")


@license_.command("verify")
@click.argument("file", type=click.Path())
@click.option("--snapshot", type=click.Path(), default=None, help="Check node locking against a node snapshot.")
@click.option("--fingerprint", default=None, help="Check node locking against this fingerprint.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable status.")
def verify(file: str, snapshot: str | None, fingerprint: str | None, as_json: bool) -> None:
    """Verify a license file: signature, trusted key, expiry, node. Exit 2 when invalid."""
    from appliance.errors import LicenseError
    from appliance.licensing import read, verify_file

    lic = read(file)
    fp = fingerprint
    if fp is None and lic.payload.node_fingerprint:
        fp = _fingerprint(snapshot)
    status = verify_file(file, fingerprint=fp)
    emit(status, as_json, _render_status)
    if not status.valid:
        raise LicenseError(f"invalid license: {status.reason}", where=file,
                           fix="ask the vendor for a new license, or trust its key")


@license_.command("install")
@click.argument("file", type=click.Path())
@click.option("--snapshot", type=click.Path(), default=None, hidden=True)
def install(file: str, snapshot: str | None) -> None:
    """Verify a license and install it under <data_dir>/licenses/."""
    from appliance.licensing import install as do_install
    from appliance.licensing import read

    lic = read(file)
    fp = _fingerprint(snapshot) if lic.payload.node_fingerprint else None
    status = do_install(file, fingerprint=fp)
    click.echo(f"installed {status.license_id} ({', '.join(status.models)}, "
               f"expires {status.expires_at}) -> {status.path}")


@license_.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
def list_(as_json: bool) -> None:
    """List installed licenses and whether each is valid here."""
    from appliance.licensing import installed

    result = installed()
    if as_json:
        click.echo(to_json(result), nl=False)
        return
    if not result.licenses:
        click.echo(f"no licenses installed ({result.directory})")
    for st in result.licenses:
        _render_status(st)


@license_.command("fingerprint")
@click.option("--snapshot", type=click.Path(), default=None, help="Fingerprint a node snapshot instead.")
def fingerprint(snapshot: str | None) -> None:
    """Print this node's fingerprint (for node-locked licenses)."""
    click.echo(_fingerprint(snapshot))


def _render_status(st) -> None:
    state = "[green]valid[/green]" if st.valid else f"[red]invalid[/red]: {st.reason}"
    console().print(f"{st.license_id or st.path}: {state}; models {', '.join(st.models) or '-'}; "
                    f"expires {st.expires_at or '-'}; key {st.key_id or '-'}"
                    + (f"; node {st.node_fingerprint}" if st.node_fingerprint else ""))
