"""``appliance config show|set``: the site configuration every later init and upgrade starts from."""

from __future__ import annotations

import click

from appliance.cli.output import emit


@click.group("config")
def config() -> None:
    """Show or change the site configuration (bind address, ports, models, profile, demo).

    `appliance init` and `appliance upgrade` start from it; `appliance init` flags change it.
    A change made here takes effect at the next `appliance init --yes`.
    """


def _render(data: dict) -> None:
    site = data["site"]
    width = max(len(k) for k in site)
    for key, value in site.items():
        shown = "default" if value is None else (",".join(value) or "(none)") if isinstance(value, list) else value
        click.echo(f"{key:<{width}}  {str(shown).lower() if isinstance(value, bool) else shown}")
    if not data["recorded"]:
        click.echo("(nothing recorded yet: these are the defaults the first `appliance init` starts from)")
    for line in data.get("changed", []):
        click.echo(f"changed: {line}")


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(as_json: bool) -> None:
    """Print the recorded site configuration (the defaults before the first init)."""
    from appliance.deploy import site as site_mod
    from appliance.deploy.requests import recorded_site

    site, recorded = recorded_site()
    emit({"recorded": recorded, "site": site_mod.describe(site)}, as_json, _render)


@config.command("set")
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def set_(assignments: tuple[str, ...], as_json: bool) -> None:
    """Change keys of the site configuration, e.g. `appliance config set gateway_port=9090`.

    Keys: bind_ip, gateway_port, app_port_base, health_timeout_s, models (comma-separated or
    'default'), profile, demo. Checked before anything is written (exit 2, one line); applied
    by the next `appliance init --yes`.
    """
    from appliance.deploy import site as site_mod
    from appliance.deploy.requests import RESET, with_changes
    from appliance.runtime import labels as L
    from appliance.state.store import StateStore

    changes = site_mod.parse_assignments(list(assignments))
    new, changed = with_changes({k: (RESET if v is None else v) for k, v in changes.items()},
                                where="config set")
    _check_names(new)
    if changed:
        store = site_mod.open_store(StateStore.open_default())
        site_mod.save(store, L.instance(), new)
        store.add_event("deploy", "site configuration changed by config set: " + "; ".join(changed)[:400],
                        data={"instance": L.instance(), "changes": changed})
    emit({"recorded": True, "site": site_mod.describe(new), "changed": changed or ["nothing (already so)"],
          "next": "apply it with `appliance init --yes`"}, as_json, _render)


def _check_names(site) -> None:
    """Model ids and the profile must exist in the catalog the next init plans with."""
    from appliance.catalog import load_catalog
    from appliance.catalog.loader import unknown_name_error

    catalog = load_catalog()
    for model in site.models or []:
        if model not in catalog.models:
            raise unknown_name_error("model", model, list(catalog.models), where="config set models")
    if site.profile not in catalog.profiles:
        raise unknown_name_error("profile", site.profile, list(catalog.profiles), where="config set profile")
