"""Users: added with an argon2id hash, listed without it, removed, re-passworded, one-time links;
exported to the gateway's files; init's first admin. Real SQLite state, the real CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from appliance.errors import UsageError
from appliance.gateway import users as U
from appliance.paths import data_dir, state_path

PW = "correct horse battery staple"


def cli(*args, stdin: str | None = None, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, input=stdin,
                          env={**os.environ, **(env or {})}, timeout=60)


def one_line_error(res, *needles: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def gw_file(name: str) -> dict:
    return json.loads((data_dir() / "gateway" / name).read_text())


def state_bytes() -> bytes:
    return b"".join(p.read_bytes() for p in state_path().parent.glob(state_path().name + "*"))


def record_release(port: int = 18080, host_ip: str = "127.0.0.1") -> None:
    """A release with a gateway on ``host_ip:port``, as init records it (where login links point)."""
    from appliance.planner.models import Plan
    from appliance.runtime import labels as L
    from appliance.runtime import releases
    from appliance.runtime.models import HealthSpec, ServiceSpec, StackSpec
    from appliance.state.store import StateStore

    gw = ServiceSpec(name="gateway", kind="gateway", image="appliance/gateway:1", port=8080, host_port=port,
                     host_ip=host_ip, health=HealthSpec(port=8080, path="/healthz"))
    stack = StackSpec(instance=L.instance(), network="n", services=[gw]).with_hashes()
    store = releases.open_store(StateStore.open_default())
    releases.commit(store, L.instance(), releases.begin(store, L.instance(), Plan(), stack, source="init"))
    store.close()


# ---- the library ---------------------------------------------------------------------------------
def test_add_stores_an_argon2id_hash_and_exports_0600_files():
    info = U.add_user("alice", role="admin", password=PW)
    assert info.name == "alice" and info.role == "admin" and info.has_password
    assert PW.encode() not in state_bytes()
    doc = gw_file("users.json")
    assert doc["format"] == "appliance-gateway-users/1"
    rec = doc["users"]["alice"]
    assert rec["role"] == "admin" and rec["epoch"] == 1 and rec["hash"].startswith("$argon2id$v=19$")
    from argon2 import PasswordHasher

    assert PasswordHasher().verify(rec["hash"], PW)
    assert gw_file("links.json") == {"format": "appliance-gateway-links/1", "generated_at": pytest.approx(
        time.time(), abs=60), "links": {}}
    for name in ("users.json", "links.json", "session.key"):
        assert stat.S_IMODE(os.stat(data_dir() / "gateway" / name).st_mode) == 0o600, name
    key = (data_dir() / "gateway" / "session.key").read_bytes()
    assert len(key) == 32
    U.add_user("bob", password=PW)
    assert (data_dir() / "gateway" / "session.key").read_bytes() == key  # created once
    assert [u.name for u in U.list_users().users] == ["alice", "bob"]
    assert "hash" not in U.list_users().model_dump_json()


def test_bad_input_is_refused_and_changes_nothing():
    U.add_user("alice", role="admin", password=PW)
    before = gw_file("users.json")["users"]
    for kwargs, needle in (({"name": "-bad"}, "invalid user name"), ({"name": "a b"}, "invalid user name"),
                           ({"name": "carl", "role": "root"}, "invalid role"),
                           ({"name": "carl", "password": "short"}, "fewer than 12"),
                           ({"name": "carl", "password": "   " * 5}, "empty"),
                           ({"name": "carl", "password": "x" * 1025}, "longer than 1024"),
                           ({"name": "alice"}, "already exists")):
        args = {"role": "user", "password": PW, **kwargs}
        with pytest.raises(UsageError, match=needle):
            U.add_user(args.pop("name"), **args)
    assert gw_file("users.json")["users"] == before and [u.name for u in U.list_users().users] == ["alice"]
    with pytest.raises(UsageError, match="no user named 'nobody'"):
        U.set_password("nobody", PW)
    with pytest.raises(UsageError, match="only admin"):
        U.remove_user("alice")


def test_passwd_and_remove_move_the_session_epoch_and_a_new_user_of_an_old_name_starts_above_it():
    U.add_user("root", role="admin", password=PW)
    U.add_user("bob", password=PW)
    old_hash = gw_file("users.json")["users"]["bob"]["hash"]
    U.set_password("bob", PW + "!")
    rec = gw_file("users.json")["users"]["bob"]
    assert rec["epoch"] == 2 and rec["hash"] != old_hash
    U.remove_user("bob")
    assert "bob" not in gw_file("users.json")["users"]
    assert [u.name for u in U.list_users().users] == ["root"]
    U.add_user("bob", password=PW)
    assert gw_file("users.json")["users"]["bob"]["epoch"] == 4  # removed at 3: an old session stays invalid


def test_login_link_stores_only_the_token_hash_and_expires_in_10_minutes():
    U.add_user("alice", role="admin", password=PW)
    link = U.create_login_link("alice", base_url="http://box.example:8080/v1")
    prefix = "http://box.example:8080/auth/login?token="
    assert link.url.startswith(prefix) and link.user == "alice"
    token = link.url[len(prefix):]
    assert len(token) >= 43  # 32 random bytes, urlsafe base64
    assert link.expires_at == pytest.approx(time.time() + 600, abs=5)
    assert token.encode() not in state_bytes()
    links = gw_file("links.json")["links"]
    assert links == {U.token_sha256(token): {"user": "alice", "expires_at": link.expires_at}}
    assert token not in (data_dir() / "gateway" / "links.json").read_text()
    # the gateway redeemed it (its links-used.json): the next export drops it and the state records the use
    (data_dir() / "gateway" / "links-used.json").write_text(json.dumps(
        {"used": {U.token_sha256(token): {"used_at": 1234.5, "expires_at": link.expires_at}}}))
    second = U.create_login_link("alice", base_url="http://box.example:8080")
    assert list(gw_file("links.json")["links"]) == [U.token_sha256(second.url.rsplit("=", 1)[1])]
    from appliance.state.store import StateStore

    store = StateStore.open_default()
    assert store.one("SELECT used_at FROM login_links WHERE token_sha256=?",
                     (U.token_sha256(token),))["used_at"] == 1234.5
    store.close()
    # a removed user's links are gone from the gateway's file at once
    U.add_user("other", role="admin", password=PW)
    U.remove_user("alice")
    assert gw_file("links.json")["links"] == {}


def test_expired_links_are_not_exported():
    U.add_user("alice", password=PW)
    U.create_login_link("alice", base_url="http://h:1", ttl_s=0.05)
    time.sleep(0.1)
    U.export_users_files()
    assert gw_file("links.json")["links"] == {}


def test_first_admin_is_made_once_with_a_link_and_no_password():
    first = U.ensure_first_admin(base_url="http://127.0.0.1:8080/v1")
    assert first.created and first.user == "admin" and first.login_url.startswith(
        "http://127.0.0.1:8080/auth/login?token=")
    rec = gw_file("users.json")["users"]["admin"]
    assert rec["role"] == "admin" and rec["hash"] is None  # no password exists to leak
    again = U.ensure_first_admin(base_url="http://127.0.0.1:8080/v1")
    assert not again.created and again.login_url is None and "users login-link admin" in again.message
    assert len(gw_file("links.json")["links"]) == 1


def test_usage_per_user_comes_from_the_gateway_usage_file():
    U.add_user("alice", password=PW)
    (data_dir() / "gateway" / "usage.json").write_text(json.dumps({"keys": {}, "users": {
        "alice": {"requests": 7, "prompt_tokens": 100, "completion_tokens": 20, "last_used_at": 1.7e9},
        "ghost": "not a record"}}))
    u = U.list_users().users[0]
    assert (u.usage.requests, u.usage.prompt_tokens, u.usage.completion_tokens) == (7, 100, 20)
    res = cli("users", "list")
    assert res.returncode == 0 and "alice" in res.stdout and " 7 " in res.stdout and "120" in res.stdout


# ---- the CLI -------------------------------------------------------------------------------------
def test_cli_add_list_passwd_remove():
    res = cli("users", "add", "alice", "--role", "admin", "--password-stdin", stdin=PW + "\n")
    assert res.returncode == 0, res.stderr
    assert PW not in res.stdout + res.stderr
    res = cli("users", "add", "bob", "--password-stdin", "--json", stdin=PW + "\n")
    assert json.loads(res.stdout)["role"] == "user"
    listed = json.loads(cli("users", "list", "--json").stdout)["users"]
    assert [(u["name"], u["role"], u["has_password"]) for u in listed] == [("alice", "admin", True),
                                                                          ("bob", "user", True)]
    assert "argon2" not in cli("users", "list", "--json").stdout
    epoch = gw_file("users.json")["users"]["bob"]["epoch"]
    assert cli("users", "passwd", "bob", "--password-stdin", stdin=PW + "2\n").returncode == 0
    assert gw_file("users.json")["users"]["bob"]["epoch"] == epoch + 1
    res = cli("users", "remove", "bob")
    assert res.returncode == 0 and "bob" not in gw_file("users.json")["users"]
    one_line_error(cli("users", "remove", "alice"), "only admin", "users add NAME --role admin")


@pytest.mark.parametrize("args, stdin, needles", [
    (["add", "bob", "--password-stdin"], "short\n", ["password:", "fewer than 12"]),
    (["add", "bob", "--password-stdin"], "\n", ["password:", "empty"]),
    (["add", "bad name", "--password-stdin"], PW + "\n", ["invalid user name"]),
    (["add", "bob", "--role", "root", "--password-stdin"], PW + "\n", ["--role", "root"]),
    (["add", "bob"], "", ["no terminal", "--password-stdin"]),
    (["passwd", "nobody", "--password-stdin"], PW + "\n", ["no user named 'nobody'"]),
    (["remove", "nobody"], None, ["no user named 'nobody'"]),
    (["login-link", "nobody"], None, ["no user named 'nobody'"]),
])
def test_cli_bad_input_is_one_line_exit_2_and_nothing_changes(args, stdin, needles):
    assert cli("users", "add", "root", "--role", "admin", "--password-stdin", stdin=PW + "\n").returncode == 0
    before = gw_file("users.json")
    one_line_error(cli("users", *args, stdin=stdin), *needles)
    assert gw_file("users.json") == before


def test_cli_login_link_points_at_the_installed_gateway():
    assert cli("users", "add", "alice", "--password-stdin", stdin=PW + "\n").returncode == 0
    one_line_error(cli("users", "login-link", "alice"), "no gateway is installed", "appliance init")
    record_release(port=18080)
    res = cli("users", "login-link", "alice", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["url"].startswith("http://127.0.0.1:18080/auth/login?token=") and out["user"] == "alice"
    res = cli("users", "login-link", "alice")
    assert res.returncode == 0 and res.stdout.strip().startswith("http://127.0.0.1:18080/auth/login?token=")
    assert "one use" in res.stderr
    assert len(gw_file("links.json")["links"]) == 2


def test_cli_asks_for_the_password_twice_on_a_terminal():
    """The prompt path, on a real pseudo-terminal: hidden input, asked twice, a mismatch refused."""
    import pty
    import select

    def run(answers: list[str]) -> tuple[int, str]:
        import signal

        pid, fd = pty.fork()
        if pid == 0:  # the child: the CLI on the terminal
            os.execvpe(sys.executable, [sys.executable, "-m", "appliance", "users", "add", "tty-user"], os.environ)
        out, prompts, deadline = b"", [b"Password:", b"Repeat it:"], time.monotonic() + 60
        answered, seen = 0, 0  # answers given; where the output after the last answered prompt starts
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            if not chunk:
                break
            out += chunk
            at = out.find(prompts[answered], seen) if answered < len(answers) else -1
            if at >= 0:  # the next prompt is there: answer it (the terminal does not echo it)
                os.write(fd, (answers[answered] + "\n").encode())
                answered, seen = answered + 1, at + len(prompts[answered])
        else:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        return os.waitstatus_to_exitcode(status), out.decode(errors="replace")

    rc, out = run([PW, PW + "x"])
    assert rc == 2 and "the two passwords differ" in out and PW not in out
    assert "tty-user" not in gw_file("users.json")["users"] if (data_dir() / "gateway" / "users.json").exists() \
        else True
    rc, out = run([PW, PW])
    assert rc == 0 and "Password:" in out and "Repeat it:" in out and PW not in out, out
    assert gw_file("users.json")["users"]["tty-user"]["hash"].startswith("$argon2id$")


def test_init_json_and_summary_carry_the_first_admin_link_once(monkeypatch):
    """init's CLI after a deploy that recorded a release: the first admin's one-time link in the
    summary and in --json (``login_link``), and on a re-run only the command for a new link."""
    from click.testing import CliRunner

    from appliance.cli import cli as root
    from appliance.deploy import requests as R
    from appliance.deploy.models import DeployResult

    result = DeployResult(kind="init", instance="default", release=3,
                          endpoints={"gateway": "http://127.0.0.1:18080/v1"})
    monkeypatch.setattr(R, "run", lambda req, say=None: result)
    runner = CliRunner()
    first = runner.invoke(root, ["init", "--yes", "--json", "--quiet"])
    assert first.exit_code == 0, first.output
    link = json.loads(first.output)["login_link"]
    assert link.startswith("http://127.0.0.1:18080/auth/login?token=")
    again = runner.invoke(root, ["init", "--yes", "--quiet"])
    assert again.exit_code == 0 and "appliance users login-link admin" in again.output
    assert "token=" not in again.output
    assert json.loads(runner.invoke(root, ["init", "--yes", "--json", "--quiet"]).output)["login_link"] is None
    dry = result.model_copy(update={"dry_run": True, "release": None})
    monkeypatch.setattr(R, "run", lambda req, say=None: dry)
    assert json.loads(runner.invoke(root, ["init", "--dry-run", "--json", "--quiet"]).output)["login_link"] is None


def test_help_stays_fast_without_argon2():
    code = ("import sys\nfrom appliance.cli import main\n"
            "try:\n    main(['users', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('ARGON2', 'argon2' in sys.modules, 'pydantic' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "login-link" in res.stdout and "ARGON2 False False" in res.stdout, res.stdout + res.stderr


def test_only_the_apps_own_keys_may_act_for_users():
    """keys.json marks app keys (owner app:<name>) ``acts_for_users``: the gateway takes their
    X-Appliance-User header for usage per user, and no other key's."""
    from appliance.gateway import keys as K
    from appliance.gateway import wiring as W

    app = W.ensure_app_key("customer-service", ["m1"], secrets_dir=data_dir() / "apps" / "cs" / "secrets")
    person = K.create_key("person")
    doc = json.loads((data_dir() / "gateway" / "keys.json").read_text())["keys"]
    assert doc[app.key_id]["acts_for_users"] is True
    assert "acts_for_users" not in doc[person.key_id]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands files to another account")
def test_files_written_after_the_directory_was_handed_to_the_gateway_stay_its_own():
    """init hands the gateway's directory to its account (uid 65530); a later `users add` as root
    must not leave a 0600 users.json the gateway cannot read."""
    U.add_user("alice", role="admin", password=PW)
    directory = data_dir() / "gateway"
    for p in [directory, *directory.iterdir()]:
        os.chown(p, 65530, 65530)
    U.add_user("bob", password=PW)
    U.create_login_link("bob", base_url="http://h:1")
    for name in ("users.json", "links.json", "keys.json"):
        if name == "keys.json":
            from appliance.gateway.keys import export_keys_file

            export_keys_file()
        st = os.stat(directory / name)
        assert (st.st_uid, st.st_gid) == (65530, 65530), name
