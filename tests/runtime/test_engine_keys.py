"""Each engine's secret and the gateway's copy of them (appliance.runtime.engine_keys), on a scratch
data dir: made once and kept, made again only when lost, 0600 files handed to the account that
reads them, upstream_keys.json rewritten only when it changes -- no Docker needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from appliance.runtime import engine_keys, pyrt
from appliance.runtime.compose import compose
from tests.runtime.test_compose import CPU
from tests.stack_support import templated_catalog


def _stack(root: Path):
    from appliance.inventory.detect import detect
    from appliance.planner import plan as make_plan

    inv = detect(snapshot=str(CPU), usage=False)
    cat = templated_catalog()
    plan = make_plan(inv, cat, models=["demo-chat", "demo-embed"], demo=True)
    return compose(plan, catalog=cat, inventory=inv, instance="unit", root=root)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_secrets_are_made_once_kept_and_made_again_only_when_lost(tmp_path):
    stack = _stack(tmp_path)
    engines = [s.name for s in stack.services if s.kind == "inference"]
    pending = engine_keys.pending_changes(stack, tmp_path)
    assert len(pending) == len(engines) + 1 and not list(tmp_path.rglob("api_key"))  # a dry run writes nothing
    first = engine_keys.ensure_stack_secrets(stack, tmp_path)
    assert [c.target for c in first] == [c.target for c in pending]
    doc = json.loads((tmp_path / "gateway" / "upstream_keys.json").read_text())
    assert doc["format"] == "appliance-upstream-keys/1" and sorted(doc["services"]) == sorted(engines)
    secrets = {n: engine_keys.engine_secret(n, tmp_path) for n in engines}
    assert secrets == doc["services"] and len(set(secrets.values())) == len(engines)
    assert all(len(s) >= 43 for s in secrets.values())                        # 32 random bytes, URL-safe
    for name in engines:
        f = tmp_path / "engines" / name / "secrets" / "api_key"
        assert _mode(f) == 0o600 and _mode(f.parent) == 0o700
    assert _mode(tmp_path / "gateway" / "upstream_keys.json") == 0o600 and _mode(tmp_path / "gateway") == 0o700
    # a re-run changes nothing (no rotation, no rewrite: the gateway sees the same file)
    inode = (tmp_path / "gateway" / "upstream_keys.json").stat().st_ino
    assert engine_keys.ensure_stack_secrets(stack, tmp_path) == []
    assert engine_keys.pending_changes(stack, tmp_path) == []
    assert (tmp_path / "gateway" / "upstream_keys.json").stat().st_ino == inode
    assert {n: engine_keys.engine_secret(n, tmp_path) for n in engines} == secrets
    # a lost secret is made again, and only that one; the gateway's copy follows
    (tmp_path / "engines" / engines[0] / "secrets" / "api_key").unlink()
    again = engine_keys.ensure_stack_secrets(stack, tmp_path)
    assert [str(Path(c.target).relative_to(tmp_path)) for c in again] == [
        f"engines/{engines[0]}/secrets/api_key", "gateway/upstream_keys.json"]
    now = json.loads((tmp_path / "gateway" / "upstream_keys.json").read_text())["services"]
    assert now[engines[0]] != secrets[engines[0]] and now[engines[1]] == secrets[engines[1]]
    # nothing returned or listed carries a secret
    listed = json.dumps([c.model_dump() for c in first + again])
    assert not any(s in listed for s in [*secrets.values(), *now.values()])


def test_files_belong_to_the_accounts_that_read_them(tmp_path):
    stack = _stack(tmp_path)
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "keys.json").write_text("{}")                   # written by the CLI, as root
    engine_keys.ensure_stack_secrets(stack, tmp_path)
    engine = next(s.name for s in stack.services if s.kind == "inference")
    secret = tmp_path / "engines" / engine / "secrets" / "api_key"
    if os.geteuid() == 0:  # as on a box: handed over
        assert (secret.stat().st_uid, secret.stat().st_gid) == (pyrt.ENGINE_UID, pyrt.ENGINE_UID)
        for p in [tmp_path / "gateway", *(tmp_path / "gateway").iterdir()]:
            assert p.stat().st_uid == pyrt.GATEWAY_UID, p
    else:  # not root: nothing handed over, the containers run as this uid instead
        assert secret.stat().st_uid == os.geteuid()
        assert all(s.user == f"{os.geteuid()}:{os.getegid()}" for s in stack.services if s.build)
