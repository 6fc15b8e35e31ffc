"""``appliance users add|list|remove|passwd|login-link``: who may sign in to the box's apps.

Thin: parse, call :mod:`appliance.gateway.users`, render. A password is read from a terminal
(hidden, asked twice) or, with ``--password-stdin``, from the first line of stdin; it is never
an option (it would sit in the shell history and in ``ps``). Every change re-exports the
gateway's files, which the running gateway re-reads within about a second.
"""

from __future__ import annotations

import sys

import click

from appliance.cli.output import emit, utc_time

ROLE = click.Choice(["admin", "user"])


def _when(ts: float | None) -> str:
    return utc_time(ts, "-")


def _read_password(from_stdin: bool) -> str:
    """The new password: stdin's first line (``--password-stdin``) or asked twice on the terminal."""
    from appliance.errors import UsageError

    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise UsageError("there is no terminal to ask the password on", where="password",
                         fix="pipe it in: printf '%s\\n' \"$PW\" | appliance users ... --password-stdin")
    first = click.prompt("Password", hide_input=True, default="", show_default=False, err=True)
    from appliance.gateway.users import check_password

    check_password(first)  # say "too short" before asking again
    second = click.prompt("Repeat it", hide_input=True, default="", show_default=False, err=True)
    if first != second:
        raise UsageError("the two passwords differ", where="password", fix="run the command again")
    return first


@click.group("users")
def users() -> None:
    """Add, list and remove the people who sign in to the apps; sign-in links."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=ROLE, default="user", show_default=True,
              help="admin or user (both may use the apps; admin is recorded for admin pages).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def add(name: str, role: str, password_stdin: bool, as_json: bool) -> None:
    """Add a user with a password (at least 12 characters)."""
    from appliance.gateway.users import add_user, check_name

    check_name(name)  # a bad name before asking for a password
    info = add_user(name, role=role, password=_read_password(password_stdin))
    emit(info, as_json, lambda u: click.echo(f"Added {u.role} {u.name!r}; sign-in link: "
                                             f"appliance users login-link {u.name}"))


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(as_json: bool) -> None:
    """List users with their role and usage (requests and tokens through the apps); never a hash."""
    from appliance.gateway.users import list_users

    result = list_users()

    def render(res) -> None:
        from rich.table import Table

        from appliance.cli.output import console

        if not res.users:
            click.echo("No users. Add one with `appliance users add NAME` (init adds the first admin).")
            return
        table = Table(box=None, pad_edge=False)
        for col in ("name", "role", "password", "created", "requests", "tokens", "last used"):
            table.add_column(col, no_wrap=True)
        for u in res.users:
            table.add_row(u.name, u.role, "set" if u.has_password else "none (links only)", _when(u.created_at),
                          str(u.usage.requests), str(u.usage.prompt_tokens + u.usage.completion_tokens),
                          _when(u.usage.last_used_at))
        console().print(table)

    emit(result, as_json, render)


@users.command("remove")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def remove(name: str, as_json: bool) -> None:
    """Remove a user; their sessions end within about a second."""
    from appliance.gateway.users import remove_user

    info = remove_user(name)
    emit(info, as_json, lambda u: click.echo(f"Removed {u.name!r}; their sessions and sign-in links no longer work."))


@users.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def passwd(name: str, password_stdin: bool, as_json: bool) -> None:
    """Set a user's password (at least 12 characters); signs them out everywhere."""
    from appliance.gateway.users import check_name, set_password

    check_name(name)
    info = set_password(name, _read_password(password_stdin))
    emit(info, as_json, lambda u: click.echo(f"Changed the password of {u.name!r}; their sessions ended."))


@users.command("login-link")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help='Machine-readable output: {"url": ..., "expires_at": ...}.')
def login_link(name: str, as_json: bool) -> None:
    """Print a one-time sign-in URL (valid for one use within 10 minutes)."""
    from appliance.gateway.users import create_login_link

    link = create_login_link(name)

    def render(lk) -> None:
        click.echo(f"One-time sign-in link for {lk.user!r} (one use, until {_when(lk.expires_at)}):", err=True)
        click.echo(lk.url)

    emit(link, as_json, render)
