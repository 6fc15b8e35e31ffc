"""``appliance console``: serve the admin console (docs/console.md). Thin: options -> config -> serve."""

from __future__ import annotations

import click

from appliance.runtime.models import DEFAULT_CONSOLE_PORT


@click.command("console")
@click.option("--bind", default=None, help="Address to listen on (default: the site configuration's bind address).")
@click.option("--port", type=int, default=DEFAULT_CONSOLE_PORT, show_default=True, envvar="APPLIANCE_CONSOLE_PORT",
              help="Port to listen on.")
@click.option("--gateway-url", default=None,
              help="The gateway's base URL for sign-in (default: the installed release's gateway).")
@click.option("--wait", "wait", is_flag=True,
              help="Until a gateway is installed (`appliance init`), wait instead of failing (the systemd unit).")
@click.option("--snapshot", type=click.Path(exists=True, file_okay=False), default=None, hidden=True,
              help="Hardware facts from a node snapshot (tests, support).")
def console(bind: str | None, port: int, gateway_url: str | None, wait: bool, snapshot: str | None) -> None:
    """Serve the admin console: the overview, models, keys and usage, training and releases
    pages, behind the box's sign-in (`appliance users login-link NAME`). Runs until SIGTERM."""
    import logging

    from appliance.console.config import resolve
    from appliance.console.server import Console, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    listen = resolve(bind=bind, port=port, gateway_url=gateway_url, snapshot=snapshot, wait=wait)
    serve(Console(listen.config), host=listen.host, port=listen.port, ssl_context=listen.ssl_context,
          ready=lambda url: click.echo(f"console at {url} (sign in: appliance users login-link NAME)", err=True))
