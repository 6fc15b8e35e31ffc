"""Keys: created once, stored salted and hashed, listed without secrets, revoked, exported."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest

from appliance.errors import UsageError
from appliance.gateway import keys as K
from appliance.gateway import wiring as W
from appliance.paths import data_dir, state_path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True)


def state_bytes() -> bytes:
    """Every byte of the state database (main file and WAL)."""
    out = b""
    for suffix in ("", "-wal", "-shm"):
        p = state_path().with_name(state_path().name + suffix)
        if p.exists():
            out += p.read_bytes()
    return out


def test_create_json_prints_key_once_and_state_holds_only_hash():
    res = cli("keys", "create", "--name", "ci", "--models", "m1,m2", "--models", "m3", "--expires", "30d",
              "--rpm", "10", "--tokens", "1000", "--json")
    assert res.returncode == 0, res.stderr
    created = json.loads(res.stdout)
    key = created["key"]
    assert key.startswith("apk_") and K.parse_key(key) == created["key_id"]
    assert created["models"] == ["m1", "m2", "m3"] and created["rpm"] == 10 and created["tokens_per_day"] == 1000
    assert created["expires_at"] == pytest.approx(time.time() + 30 * 86400, abs=60)
    secret = key.split("_", 2)[2].encode()
    blob = state_bytes()
    assert blob and key.encode() not in blob and secret not in blob
    # the verification file: hash, no key
    doc = json.loads((data_dir() / "gateway" / "keys.json").read_text())
    rec = doc["keys"][created["key_id"]]
    assert rec["hash"] == K.hash_key(key, rec["salt"]) and key not in json.dumps(doc)
    assert stat.S_IMODE(os.stat(data_dir() / "gateway" / "keys.json").st_mode) == 0o644
    # list never shows it
    listed = cli("keys", "list", "--json")
    assert listed.returncode == 0 and key not in listed.stdout and secret.decode() not in listed.stdout
    entry = json.loads(listed.stdout)["keys"][0]
    assert entry["name"] == "ci" and entry["status"] == "active" and entry["models"] == ["m1", "m2", "m3"]
    assert K.verify_key(key).name == "ci"
    assert K.verify_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None


def test_human_create_and_list_and_revoke():
    res = cli("keys", "create", "--name", "human")
    assert res.returncode == 0
    key = res.stdout.strip().splitlines()[-1]
    assert K.verify_key(key) is not None and "not be shown again" in res.stderr
    assert "human" in cli("keys", "list").stdout
    rev = cli("keys", "revoke", "human")
    assert rev.returncode == 0 and "Revoked" in rev.stdout
    assert K.verify_key(key) is None
    assert json.loads((data_dir() / "gateway" / "keys.json").read_text())["keys"] == {}
    assert "human" not in cli("keys", "list").stdout
    assert json.loads(cli("keys", "list", "--all", "--json").stdout)["keys"][0]["status"] == "revoked"
    # the name is free again after revocation
    assert cli("keys", "create", "--name", "human").returncode == 0


@pytest.mark.parametrize("args, where", [
    (["create", "--name", "bad name"], "--name"),
    (["create", "--name", "x", "--expires", "2001-01-01"], "--expires"),
    (["create", "--name", "x", "--expires", "soon"], "--expires"),
    (["create", "--name", "x", "--rpm", "0"], "--rpm"),
    (["create", "--name", "x", "--models", "bad model!"], "--models"),
    (["revoke", "nobody"], "keys revoke"),
])
def test_bad_input_is_one_line_exit_2(args, where):
    res = cli("keys", *args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {where}") and "fix:" in lines[0]
    assert "Traceback" not in res.stderr


def test_duplicate_active_name_refused_and_nothing_half_applied():
    K.create_key("dup")
    with pytest.raises(UsageError):
        K.create_key("dup")
    assert [k.name for k in K.list_keys().keys] == ["dup"]


def test_parse_expiry_durations_and_iso():
    now = 1_000_000.0
    assert K.parse_expiry("90s", now=now) == now + 90
    assert K.parse_expiry("15m", now=now) == now + 900
    assert K.parse_expiry("12h", now=now) == now + 43200
    assert K.parse_expiry("2w", now=now) == now + 14 * 86400
    assert K.parse_expiry(None) is None and K.parse_expiry("never") is None
    assert K.parse_expiry("2999-01-02") == pytest.approx(32472230400.0)
    assert K.parse_expiry("2999-01-02T00:00:00+01:00") == pytest.approx(32472230400.0 - 3600)


def test_each_key_has_its_own_salt():
    a, b = K.create_key("a"), K.create_key("b")
    doc = json.loads((data_dir() / "gateway" / "keys.json").read_text())["keys"]
    assert doc[a.key_id]["salt"] != doc[b.key_id]["salt"]
    assert len(bytes.fromhex(doc[a.key_id]["salt"])) == 16


def test_ensure_app_key_is_idempotent_and_file_is_private():
    first = W.ensure_app_key("knowledge-base", ["demo-chat", "demo-embed"])
    assert first.created
    path = first.key_file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = open(path).read().strip()
    assert K.verify_key(key).models == ["demo-chat", "demo-embed"]
    again = W.ensure_app_key("knowledge-base", ["demo-embed", "demo-chat"])
    assert not again.created and again.key_id == first.key_id and open(path).read().strip() == key
    # a changed scope rotates it (old key revoked)
    third = W.ensure_app_key("knowledge-base", ["demo-chat"])
    assert third.created and K.verify_key(key) is None
    # a lost file also rotates it
    os.unlink(path)
    fourth = W.ensure_app_key("knowledge-base", ["demo-chat"])
    assert fourth.created and fourth.key_id != third.key_id
    assert [k.name for k in K.list_keys().keys] == ["app-knowledge-base"]
    assert key.encode() not in state_bytes()


def test_app_env_has_no_secret_and_carries_every_bound_role():
    from appliance.catalog import load_catalog
    from appliance.runtime.compose import app_env

    kb = load_catalog().apps["knowledge-base"]
    env = app_env(kb, {"chat": "c", "embedding": "e", "rerank": "r"}, gateway_url="http://gateway:8080",
                  public_gateway_url="http://127.0.0.1:8080")
    assert env["APP_API_KEY_FILE"] == "/run/appliance/api_key" and env["EMBED_MODEL"] == "e"
    assert env["RERANK_MODEL"] == "r" and env["CHAT_MODEL"] == "c" and env["APP_DATA_DIR"] == "/data"
    assert not any(v.startswith("apk_") for v in env.values())


def test_usage_file_is_read_into_list():
    created = K.create_key("used")
    gw = data_dir() / "gateway"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    (gw / "usage.json").write_text(json.dumps({"keys": {created.key_id: {
        "requests": 3, "prompt_tokens": 10, "completion_tokens": 5, "day": today, "day_tokens": 15,
        "denied": 1, "last_used_at": time.time()}}}))
    u = K.list_keys().keys[0].usage
    assert (u.requests, u.prompt_tokens, u.completion_tokens, u.tokens_today, u.denied) == (3, 10, 5, 15, 1)


def test_unwritable_gateway_dir_is_one_line_and_nothing_stored(tmp_path):
    K.create_key("first")
    gw = data_dir() / "gateway"
    (gw / "keys.json").unlink()
    gw.rmdir()
    gw.write_text("not a directory")  # the export cannot happen
    res = cli("keys", "create", "--name", "second")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert [k.name for k in K.list_keys().keys] == ["first"]  # rolled back


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_key_stored_is_a_key_shown_even_when_the_command_is_signalled(sig):
    """``keys create`` signalled between storing the key and printing it still prints it (the
    signal waits for the output): no active key exists that its creator never saw."""
    import signal

    env = {**os.environ, K.FAULT_ENV: "pause-after-commit"}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "keys", "create", "--name", f"sig-{sig.lower()}",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr.readline().strip() == "fault: paused after-commit"
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0                    # the signal still ends the process, afterwards
    shown = json.loads(out)
    listed = {k["name"]: k for k in json.loads(cli("keys", "list", "--json").stdout)["keys"]}
    assert listed[f"sig-{sig.lower()}"]["key_id"] == shown["key_id"] == K.parse_key(shown["key"])
