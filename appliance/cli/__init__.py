"""The ``appliance`` command line: a thin layer over the library.

Commands are registered here by name and imported lazily, so ``appliance --help`` and
``appliance detect`` never import docker, ansible_runner or the planner. Each command
module parses its options, calls one library function that returns a pydantic model,
and renders it (a table for people, ``--json`` for machines).

Errors: library code raises :class:`appliance.errors.ApplianceError`; :func:`main`
turns it into one line on stderr and its exit code (2 for bad input). ``--debug``
(or ``APPLIANCE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from appliance import __version__

# name -> (module, attribute, one-line help). Keep the help here so that listing
# commands does not import them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "detect": ("appliance.cli.detect_cmd", "detect", "Detect the node: CPU, memory, disks and accelerators."),
    "snapshot": ("appliance.cli.detect_cmd", "snapshot", "Capture a node snapshot (files + tool output) for support."),
    "catalog": ("appliance.cli.catalog_cmd", "catalog", "Inspect and validate the image/model catalog."),
    "license": ("appliance.cli.license_cmd", "license", "Issue and verify licenses for closed models."),
    "plan": ("appliance.cli.plan_cmd", "plan", "Plan which engine image serves each model on this node, and why."),
    "cluster": ("appliance.cli.cluster_cmd", "cluster",
                "Gather the inventory of every node of an Ansible inventory (a rack as one appliance)."),
    "models": ("appliance.cli.models_cmd", "models",
               "Import, verify and place model weights offline (the model store)."),
    "preflight": ("appliance.cli.provision_cmd", "preflight", "Check the host before anything changes."),
    "provision": ("appliance.cli.provision_cmd", "provision", "Prepare the host with the Ansible playbooks."),
    "init": ("appliance.cli.stack_cmd", "init", "Install and start the whole stack (detect, plan, provision, start)."),
    "config": ("appliance.cli.config_cmd", "config",
               "Show or change the site configuration init and upgrade start from."),
    "up": ("appliance.cli.stack_cmd", "up", "Start the recorded stack again."),
    "down": ("appliance.cli.stack_cmd", "down", "Stop the stack (--purge removes everything it created)."),
    "logs": ("appliance.cli.stack_cmd", "logs", "Show a service's logs."),
    "agent": ("appliance.cli.agent_cmd", "agent", "Run the node agent (reconcile loop and metrics)."),
    "status": ("appliance.cli.status_cmd", "status", "Show the health of the box at a glance."),
    "keys": ("appliance.cli.keys_cmd", "keys", "Create, list and revoke gateway API keys."),
    "users": ("appliance.cli.users_cmd", "users", "Add, list and remove app users; one-time sign-in links."),
    "bundle": ("appliance.cli.bundle_cmd", "bundle", "Create, verify and inspect offline bundles."),
    "upgrade": ("appliance.cli.bundle_cmd", "upgrade", "Apply an offline upgrade bundle (rolls back on failure)."),
    "rollback": ("appliance.cli.bundle_cmd", "rollback", "Return to the previous release."),
    "console": ("appliance.cli.console_cmd", "console", "Serve the admin console (a web page of the box)."),
    "train": ("appliance.cli.train_cmd", "train", "Submit and manage fine-tuning jobs."),
    "serve": ("appliance.cli.train_cmd", "serve", "Serve a fine-tuned model behind the gateway."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = COMMANDS.get(name)
        if spec is None:
            return None
        module_name, attr, _ = spec
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None  # command not built yet
            raise
        return getattr(module, attr, None)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(name: str) -> bool:
    module_name = COMMANDS[name][0]
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="appliance")
@click.option("--debug", is_flag=True, envvar="APPLIANCE_DEBUG", help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """appliance: provision and run an on-prem LLM all-in-one box.

    Start with `appliance detect`, then `appliance init --demo --yes` on a machine
    without accelerators, or `appliance init --yes` on a real box.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if debug:
        os.environ["APPLIANCE_DEBUG"] = "1"


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("APPLIANCE_DEBUG") in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and map errors to one line + exit code."""

    from appliance.errors import ApplianceError
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = cli.main(args=args, prog_name="appliance", standalone_mode=False)
    except ApplianceError as exc:
        if _debug_requested(args):
            raise
        click.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    except click.UsageError as exc:  # a bad option or argument: one line too, naming the command's help
        where = exc.ctx.command_path if exc.ctx is not None else "appliance"
        click.echo(f"error: {exc.format_message()} (fix: see `{where} --help`)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # an internal bug: still one line for users
        if _debug_requested(args):
            raise
        click.echo(
            f"error: internal error: {type(exc).__name__}: {exc} "
            "(fix: re-run with --debug and report the traceback)",
            err=True,
        )
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
