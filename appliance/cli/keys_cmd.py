"""``appliance keys create|list|revoke``: the gateway's API keys.

The plaintext key is printed once, by ``create``; the state keeps only a salted hash
(see :mod:`appliance.gateway.keys`). Every change re-exports the gateway's verification
file, which the running gateway re-reads within about a second (no restart).
"""

from __future__ import annotations

import time

import click

from appliance.cli.output import emit, utc_time


def _when(ts: float | None) -> str:
    return utc_time(ts, "never")


def _day(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%d", time.gmtime(ts))


@click.group("keys")
def keys() -> None:
    """Create, list and revoke gateway API keys."""


@keys.command("create")
@click.option("--name", required=True, help="A unique name for the key (letters, digits, . _ -).")
@click.option("--models", multiple=True, metavar="MODEL[,MODEL...]",
              help="Restrict the key to these served model names (repeat or comma-separate; * and ? match). "
                   "Default: every model.")
@click.option("--expires", default=None, metavar="30d|ISO",
              help="Expiry: a duration (90s, 15m, 12h, 30d, 2w, 1y) or an ISO date/time (UTC). Default: never.")
@click.option("--rpm", type=int, default=None, help="At most N requests per minute (429 beyond). Default: no limit.")
@click.option("--tokens", type=int, default=None,
              help="At most N tokens (prompt + completion) per UTC day (429 beyond). Default: no limit.")
@click.option("--json", "as_json", is_flag=True, help='Machine-readable output: {"key": ..., ...}.')
def create(name: str, models: tuple[str, ...], expires: str | None, rpm: int | None, tokens: int | None,
           as_json: bool) -> None:
    """Create a key and print it ONCE (only its salted hash is stored)."""
    from appliance.cli.streams import signals_deferred
    from appliance.gateway.keys import create_key

    def render(c) -> None:
        scope = ", ".join(c.models) if c.models else "all models"
        limits = []
        if c.rpm:
            limits.append(f"{c.rpm} requests/min")
        if c.tokens_per_day:
            limits.append(f"{c.tokens_per_day} tokens/day")
        click.echo(f"Created key {c.name!r}: {scope}; expires {_when(c.expires_at)}"
                   + (f"; limits {', '.join(limits)}" if limits else "") + ".")
        click.echo("Copy it now -- it is not stored and will not be shown again:", err=True)
        click.echo(c.key)

    # stored and shown as one step: Ctrl-C, SIGTERM or a closed terminal while the key is being
    # stored waits until it has been printed, so no active key exists that nobody saw
    with signals_deferred():
        created = create_key(name, models=list(models), expires=expires, rpm=rpm, tokens_per_day=tokens)
        emit(created, as_json, render)


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(include_revoked: bool, as_json: bool) -> None:
    """List keys with scope, expiry, limits and usage (never the keys themselves)."""
    from appliance.gateway.keys import list_keys

    result = list_keys(include_revoked=include_revoked)

    def render(res) -> None:
        from rich.table import Table

        from appliance.cli.output import console

        if not res.keys:
            click.echo("No keys. Create one with `appliance keys create --name NAME`.")
            return
        table = Table(box=None, pad_edge=False)
        for col in ("name", "id", "status", "models", "expires", "limits", "used", "last used"):
            table.add_column(col, no_wrap=col in ("name", "id", "status", "expires"))
        for k in res.keys:
            u = k.usage
            limits = ", ".join(x for x in (f"{k.rpm}/min" if k.rpm else "",
                                           f"{k.tokens_per_day} tok/day" if k.tokens_per_day else "") if x)
            table.add_row(k.name, k.key_id, k.status, ", ".join(k.models) or "all",
                          _day(k.expires_at), limits or "-",
                          f"{u.requests} req, {u.prompt_tokens + u.completion_tokens} tok",
                          _when(u.last_used_at) if u.last_used_at else "-")
        console().print(table)

    emit(result, as_json, render)


@keys.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def revoke(name: str, as_json: bool) -> None:
    """Revoke a key; the running gateway rejects it within about a second."""
    from appliance.gateway.keys import revoke_key

    info = revoke_key(name)
    emit(info, as_json, lambda k: click.echo(f"Revoked key {k.name!r} ({k.key_id}); the gateway rejects it "
                                             "within about a second."))
