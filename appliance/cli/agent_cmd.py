"""``appliance agent``: the long-running node agent (run by the systemd unit).

Thin: options -> :class:`appliance.agent.loop.Agent` -> run until SIGTERM (exit 0).
``--once`` runs a single pass and prints what it did (for scripts and tests).
"""

from __future__ import annotations

import logging

import click

from appliance.cli.output import emit
from appliance.runtime.models import DEFAULT_AGENT_METRICS_PORT


@click.command("agent")
@click.option("--interval", "interval_s", type=float, default=15.0, show_default=True,
              envvar="APPLIANCE_AGENT_INTERVAL", help="Seconds between reconcile passes.")
@click.option("--detect-every", type=int, default=1, show_default=True,
              help="Re-detect the hardware every N passes.")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True, envvar="APPLIANCE_METRICS_ADDR",
              help="Address of the Prometheus endpoint.")
@click.option("--metrics-port", type=int, default=DEFAULT_AGENT_METRICS_PORT, show_default=True,
              envvar="APPLIANCE_METRICS_PORT", help="Port of the Prometheus endpoint (0: none).")
@click.option("--snapshot", type=click.Path(exists=True, file_okay=False), default=None, hidden=True,
              help="Detect from a node snapshot (tests, support).")
@click.option("--once", is_flag=True, help="Run one pass, print it, exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: machine-readable pass report.")
def agent(interval_s: float, detect_every: int, metrics_addr: str, metrics_port: int, snapshot: str | None,
          once: bool, as_json: bool) -> None:
    """Run the node agent: every INTERVAL seconds restore missing or stopped containers of
    the recorded release (with backoff), re-detect the hardware (services whose devices
    vanished are marked degraded) and export Prometheus metrics. When it starts it first
    finishes or rolls back an upgrade a crash interrupted. Exits 0 on SIGTERM;
    with --once, exits 1 when the pass failed (e.g. Docker unreachable)."""
    from dataclasses import asdict

    from appliance.agent.loop import Agent, AgentConfig
    from appliance.errors import UsageError

    if interval_s <= 0:
        raise UsageError(f"--interval must be positive, got {interval_s}", where="--interval", fix="e.g. --interval 15")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = AgentConfig(interval_s=interval_s, detect_every=max(1, detect_every), metrics_addr=metrics_addr,
                      metrics_port=0 if once else metrics_port, snapshot=snapshot, once=once)
    runner = Agent(cfg)
    if once:
        runner.recover()  # like a starting agent: finish or undo an interrupted upgrade first
        report = runner.reconcile_once()
        runner.close()
        emit(asdict(report), as_json, lambda r: click.echo(
            f"release {r['release']} ({r['desired']}): {r['services']} service(s), "
            f"{len(r['repairs'])} repair(s)" + (f", error: {r['error']}" if r['error'] else "")
            + "".join(f"\n  {x['action']} {x['service']}: {'ok' if x['ok'] else 'failed'}" for x in r['repairs'])
            + "".join(f"\n  degraded {k}: {v}" for k, v in r['degraded'].items())))
        if report.error:
            raise SystemExit(1)
        return
    runner.install_signal_handlers()
    url = runner.start_metrics()
    logging.getLogger("appliance.agent").info(
        "agent for instance %s: every %gs%s", runner.instance, interval_s, f", metrics at {url}" if url else "")
    runner.run()
