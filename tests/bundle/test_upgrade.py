"""Upgrades of a real demo stack on the real Docker engine: refusals, round trip, crashes.

One node (its own instance, data dir and free ports) is installed at 1.0.0 from a bundle
(``--demo --models demo-chat,demo-embed``) and exercised in order. Release images are the
templated test engine plus one small layer, built by the tests; the bundles carry them with a
catalog (the shipped one plus the templated overlay's file) that points the templated engine at
them (external images: only the bundle can provide them). The node's own resources
(``APPLIANCE_RESOURCES``, a copy) have the overlay's file in their shipped catalog too, so the
node can fine-tune ``demo-chat`` as the bundles' catalogs know it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.stack_support import TEMPLATED_MODELS, free_port_block, purge_instance, run_cli, unique_instance

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def cli(node, *args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, env={**node.env, **(extra_env or {})})


@pytest.fixture(scope="module")
def node(release_bundles, release_images, keypair, docker_engine, node_resources, tmp_path_factory):
    inst = unique_instance("tb")
    for ref in release_images.values():  # from here on only the bundles can provide them
        docker_engine.remove_image(ref)
    data = tmp_path_factory.mktemp("node-data")
    gw, apps = free_port_block(1), free_port_block(3)
    n = SimpleNamespace(instance=inst, data=data, bundles=release_bundles, images=release_images,
                        env={"APPLIANCE_INSTANCE": inst, "APPLIANCE_DATA_DIR": str(data),
                             "APPLIANCE_BUNDLE_PUBKEYS": keypair.public_key,
                             # its shipped catalog knows the templated engine's models (train submit)
                             "APPLIANCE_RESOURCES": str(node_resources)})
    try:
        # first install through `appliance init --bundle` (the same verified, journaled path)
        res = cli(n, "init", "--bundle", str(release_bundles.r1), "--demo", "--models", TEMPLATED_MODELS, "--yes",
                  "--json", "--gateway-port", str(gw), "--app-port-base", str(apps), "--health-timeout", "30")
        assert res.returncode == 0, res.stderr[-3000:]
        n.install = json.loads(res.stdout)
        assert n.install["ok"] and n.install["release"] == 1
        yield n
    finally:
        purge_instance(inst)


@pytest.fixture
def on_node(node, monkeypatch):
    for k, v in node.env.items():
        monkeypatch.setenv(k, v)
    return node


def state(node) -> dict:
    """Everything an upgrade could change, for before/after comparisons and consistency checks."""
    from appliance.bundle import journal as J
    from appliance.runtime import labels as L
    from appliance.runtime import releases
    from appliance.runtime.docker_adapter import Docker
    from appliance.state.store import StateStore

    store = StateStore(node.data / "state.db")
    try:
        rstore = releases.open_store(store)
        cur = releases.current(rstore, node.instance)
        ops = J.open_store(store).query("SELECT id, status, step FROM bundle_ops ORDER BY id")
        with Docker() as d:
            containers = d.list_containers(L.instance_filter(node.instance))
            engine_ids = {c.service: d.client.api.inspect_container(c.id)["Image"] for c in containers
                          if c.labels.get(L.KIND) == "inference"}
        blobs = sorted(p.name for p in (node.data / "blobs" / "sha256").glob("*"))
        rdirs = sorted(p.name for p in (node.data / "releases").glob("*"))
        return {"release": (cur.id, cur.version) if cur else None, "stack": cur.stack if cur else None,
                "containers": sorted((c.service, c.id, c.labels.get(L.SPEC_HASH), c.state, c.health)
                                     for c in containers),
                "engine_images": engine_ids, "blobs": blobs, "release_dirs": rdirs,
                "ops": [tuple(r) for r in ops]}
    finally:
        store.close()


def assert_one_release(node, version: str) -> dict:
    """The active release is ``version`` and the containers are exactly its services, healthy."""
    s = state(node)
    assert s["release"] is not None and s["release"][1] == version, s["release"]
    want = {svc.name: svc.spec_hash() for svc in s["stack"].services}
    have: dict[str, list] = {}
    for service, _cid, spec_hash, st, health in s["containers"]:
        have.setdefault(service, []).append((spec_hash, st, health))
    assert set(have) == set(want), f"services {sorted(have)} != {sorted(want)}"
    for name, rows in have.items():
        assert rows == [(want[name], "running", "healthy")], f"{name}: {rows} (want {want[name]})"
    image = node.images[version]
    from appliance.runtime.docker_adapter import Docker

    with Docker() as d:
        image_id = d.image_id(image)
    assert s["engine_images"] and set(s["engine_images"].values()) == {image_id}
    return s


def _ops_done(node) -> list:
    return [op for op in state(node)["ops"] if op[1] == "running"]


# ---- 1. refusals: one clear line, nothing changed ---------------------------------------------------
def _tampered(node, tamper, tmp_path, case: str) -> Path:
    src = node.bundles.r2_delta
    bad = tmp_path / f"{case}.bundle"
    from appliance.bundle.reader import scan

    if case == "flipped-blob-byte":
        tamper.copy(src, bad)
        m = max(scan(bad).blob_members.values(), key=lambda m: m.size)
        tamper.flip_byte(bad, m.offset_data + m.size // 3)
    elif case == "flipped-manifest-byte":
        tamper.copy(src, bad)
        raw = bad.read_bytes()
        tamper.flip_byte(bad, raw.index(b'"version": "2.0.0"') + len('"version": "2.0.'))
    elif case == "untrusted-signer":
        tamper.copy(node.bundles.r2_untrusted, bad)
    elif case == "truncated":
        tamper.copy(src, bad)
        os.truncate(bad, bad.stat().st_size * 6 // 10)
    elif case in ("extra-file", "missing-blob", "dotdot-entry", "absolute-path", "symlink"):
        entries = tamper.members(src)
        if case == "missing-blob":
            entries.pop(2)
        else:
            name = {"extra-file": "blobs/sha256/" + "ab" * 32, "dotdot-entry": "blobs/../../etc/cron.d/x",
                    "absolute-path": "/etc/cron.d/x", "symlink": "blobs/sha256/" + "cd" * 32}[case]
            info = tarfile.TarInfo(name)
            data = b"* * * * * root true\n"
            if case == "symlink":
                info.type, info.linkname, data = tarfile.SYMTYPE, "/etc/shadow", None
            else:
                info.size = len(data)
            entries.insert(3, (info, data))
        tamper.rewrite(src, bad, entries)
    elif case == "older-version":
        tamper.copy(node.bundles.r09, bad)
    elif case == "upgrades-from-mismatch":
        tamper.copy(node.bundles.r3, bad)
    return bad


REFUSALS = {
    "flipped-blob-byte": "does not match its digest",
    "flipped-manifest-byte": "manifest signature does not verify",
    "untrusted-signer": "which is not trusted on this node",
    "truncated": "truncated",
    "extra-file": "not listed in the manifest (extra file)",
    "missing-blob": "listed in the manifest is missing from the bundle",
    "dotdot-entry": "escapes the bundle with '..'",
    "absolute-path": "has an absolute path",
    "symlink": "is a symbolic link",
    "older-version": "is older than the installed 1.0.0 (refused: rollback protection)",
    "upgrades-from-mismatch": "upgrades from 2.0.0, but this node runs 1.0.0",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_with_one_line_and_nothing_changed(node, tamper, tmp_path, case):
    bad = _tampered(node, tamper, tmp_path, case)
    before = state(node)
    res = cli(node, "upgrade", str(bad), "--yes")
    after = state(node)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    assert REFUSALS[case] in lines[0]
    assert after == before
    assert before["release"][1] == "1.0.0"


def test_delta_needs_its_base_on_the_node(node, tmp_path):
    fresh = {"APPLIANCE_DATA_DIR": str(tmp_path / "fresh"), "APPLIANCE_INSTANCE": unique_instance("tf")}
    res = cli(node, "init", "--bundle", str(node.bundles.r2_delta), "--demo", "--models", TEMPLATED_MODELS, "--yes",
              extra_env=fresh)
    assert res.returncode == 2, res.stderr
    assert "blob(s) it leaves out are not on this node" in res.stderr
    assert not (tmp_path / "fresh" / "blobs").exists() and not (tmp_path / "fresh" / "releases").exists()


# ---- 2. round trip -------------------------------------------------------------------------------
def test_round_trip_upgrade_then_rollback(node, docker_engine):
    s1 = assert_one_release(node, "1.0.0")
    res = cli(node, "bundle", "verify", str(node.bundles.r2_delta))
    assert res.returncode == 0 and res.stdout.startswith("ok: "), res.stderr
    full, delta = node.bundles.reports["r2"], node.bundles.reports["r2_delta"]
    print(f"release 2 bundle: full {full.file_size_bytes} bytes, delta against 1.0.0 {delta.file_size_bytes} "
          f"bytes ({delta.blobs_in_bundle} of {delta.blobs} blobs)")
    assert delta.blobs_in_bundle == 3 and delta.file_size_bytes < full.file_size_bytes / 10
    res = cli(node, "upgrade", str(node.bundles.r2_delta), "--yes", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["ok"] and out["from_version"] == "1.0.0" and out["to_version"] == "2.0.0"
    s2 = assert_one_release(node, "2.0.0")
    res = cli(node, "status", "--json")
    report = json.loads(res.stdout)
    assert res.returncode == 0 and report["release"]["version"] == "2.0.0" and report["healthy"], res.stdout[-2000:]
    assert report["last_upgrade"]["to_version"] == "2.0.0" and report["last_upgrade"]["status"] == "done"
    # blue/green replaced only the engine services; gateway and apps kept their containers
    kept = {c[0]: c[1] for c in s1["containers"]} .items() & {c[0]: c[1] for c in s2["containers"]}.items()
    assert {name for name, _ in kept} == {s.name for s in s2["stack"].services if s.kind != "inference"}
    # someone pruned release 1's image: rollback reloads it from the node's content store
    docker_engine.remove_image(node.images["1.0.0"])
    assert docker_engine.image_id(node.images["1.0.0"]) is None
    res = cli(node, "rollback", "--yes", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["loaded_images"] == [node.images["1.0.0"]]
    assert_one_release(node, "1.0.0")
    assert not _ops_done(node)


def test_failed_switch_rolls_back_automatically(node, docker_engine, keypair, release_kit, tmp_path):
    """A release whose engine never gets healthy: the upgrade fails at the switch and rolls back."""
    from appliance.bundle.create import create_bundle

    ref = release_kit.build_engine("2.1.0", {"main.py": b"import sys\nprint('engine 2.1.0: bad config')\n"
                                                         b"sys.exit(3)\n"}, "/app/main.py")
    spec = release_kit.write_spec(tmp_path / "s21", "2.1.0", ref, ["1.0.0"])
    bundle = Path(create_bundle(spec, tmp_path / "r21.bundle", Path(keypair.private_key),
                                base=node.bundles.r1).file)
    docker_engine.remove_image(ref)  # only the bundle can provide it now
    before = assert_one_release(node, "1.0.0")
    res = cli(node, "upgrade", str(bundle), "--yes")
    assert res.returncode == 1, res.stderr[-3000:]
    assert "failed at step switch" in res.stderr and "rolled back to 1.0.0" in res.stderr
    after = assert_one_release(node, "1.0.0")
    assert after["containers"] == before["containers"]
    assert state(node)["ops"][-1][1] == "rolled_back"


# ---- 3. crashes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("point,outcome", [("load", "rolled_back"), ("switch", "rolled_back"),
                                           ("switch-remove", "rolled_back"), ("commit", "completed")])
def test_kill_9_then_one_consistent_release(node, docker_engine, point, outcome):
    assert_one_release(node, "1.0.0")
    docker_engine.remove_image(node.images["2.0.0"])  # so the upgrade really loads it
    assert docker_engine.image_id(node.images["2.0.0"]) is None
    res = cli(node, "upgrade", str(node.bundles.r2), "--yes", extra_env={"APPLIANCE_BUNDLE_FAULT": point})
    assert res.returncode == -9, (res.returncode, res.stderr[-2000:])
    interrupted = state(node)
    assert [op[1:] for op in interrupted["ops"] if op[1] == "running"], "the journal shows the interrupted upgrade"
    # the state names exactly one active release at every moment
    assert interrupted["release"][1] == ("2.0.0" if point == "commit" else "1.0.0")
    # `appliance status` only reports the interrupted operation (exit 1, with the fix): it
    # changes nothing -- not the journal, not the releases, not a container
    res = cli(node, "status", "--json")
    assert res.returncode == 1, (res.returncode, res.stdout[-3000:], res.stderr[-2000:])
    report = json.loads(res.stdout)
    flagged = [p for p in report["problems"] if p["code"] == "upgrade_interrupted"]
    assert len(flagged) == 1 and "interrupted at step" in flagged[0]["message"], report["problems"]
    assert "appliance upgrade" in flagged[0]["fix"] and "appliance agent" in flagged[0]["fix"]
    assert state(node) == interrupted, "status must not change anything"
    # the node agent finishes or undoes it when it starts
    res = cli(node, "agent", "--once", "--metrics-port", "0")
    assert res.returncode == 0, res.stderr[-3000:]
    want = "2.0.0" if outcome == "completed" else "1.0.0"
    res = cli(node, "status", "--json")
    report = json.loads(res.stdout)
    assert report["release"]["version"] == want
    assert not [p for p in report["problems"] if p["code"].startswith("upgrade_")], report["problems"]
    assert all(svc["health"] == "healthy" for svc in report["services"]), report["services"]
    assert_one_release(node, want)
    assert not _ops_done(node)
    # re-running the upgrade completes it (or says it is already installed)
    res = cli(node, "upgrade", str(node.bundles.r2), "--yes")
    if outcome == "completed":
        assert res.returncode == 2 and "already installed" in res.stderr
    else:
        assert res.returncode == 0, res.stderr[-3000:]
    assert_one_release(node, "2.0.0")
    res = cli(node, "rollback", "--yes")
    assert res.returncode == 0, res.stderr[-3000:]
    assert_one_release(node, "1.0.0")


def test_interrupted_upgrade_is_recovered_by_the_next_upgrade(node):
    """No separate recovery call: the next `appliance upgrade` rolls back the interrupted one first."""
    res = cli(node, "upgrade", str(node.bundles.r2), "--yes", extra_env={"APPLIANCE_BUNDLE_FAULT": "switch"})
    assert res.returncode == -9
    res = cli(node, "upgrade", str(node.bundles.r2), "--yes", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["recovered"]["action"] == "rolled_back" and out["to_version"] == "2.0.0"
    assert_one_release(node, "2.0.0")
    assert not _ops_done(node)


def test_cleanup_keeps_current_and_previous_only(node):
    s = state(node)
    assert sorted(s["release_dirs"]) == ["1.0.0", "2.0.0"]
    from appliance.bundle.manifest import Manifest

    needed = set()
    for v in ("1.0.0", "2.0.0"):
        m = Manifest.model_validate_json((node.data / "releases" / v / "manifest.json").read_text())
        needed |= {b.digest.split(":")[1] for b in m.blobs}
    assert set(s["blobs"]) == needed


# ---- 4. the site configuration and the installed version across init, serve and upgrade -----------
def _status(node) -> dict:
    res = cli(node, "status", "--json")
    assert res.returncode in (0, 1), res.stderr[-2000:]
    return json.loads(res.stdout)


def test_serve_and_reinit_keep_the_installed_version_and_an_upgrade_keeps_the_served_model(node, tmp_path):
    """Before the one pipeline: `serve` and a plain `init` recorded their release as the shipped
    0.1.0, so an older bundle then passed as an "upgrade" (rollback protection bypassed); a re-run
    without `--gateway-port` moved the endpoints; and every upgrade after `serve` failed with
    `unknown model 'demo-chat-lora-...'` (the bundle's catalog lacked the node's overlay)."""
    if state(node)["release"][1] == "1.0.0":  # run alone (-k): get to 2.0.0 first
        assert cli(node, "upgrade", str(node.bundles.r2), "--yes").returncode == 0
    assert_one_release(node, "2.0.0")
    before = _status(node)
    dataset = tmp_path / "faq.jsonl"
    dataset.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}?"},
                                                        {"role": "assistant", "content": f"answer {i}."}]}) + "\n"
                               for i in range(12)))
    res = cli(node, "train", "submit", "--model", "demo-chat", "--dataset", str(dataset), "--wait", "--json", "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    job = json.loads(res.stdout)["job"]
    assert job["status"] == "completed", job
    res = cli(node, "serve", job["id"], "--json", "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    served = json.loads(res.stdout)
    tuned, tuned_service = served["model"], served["service"]
    s = state(node)
    assert s["release"][1] == "2.0.0", "serve records its release under the installed version"
    assert tuned_service in {c[0] for c in s["containers"]}

    # a plain re-run of init: nothing given, nothing forgotten
    res = cli(node, "init", "--yes", "--json", "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    again = state(node)
    assert again["release"] == s["release"] and again["containers"] == s["containers"]
    after = _status(node)
    assert after["endpoints"] == before["endpoints"]
    config = json.loads(cli(node, "config", "show", "--json").stdout)["site"]
    assert config["served"] == [tuned] and config["demo"] is True

    # rollback protection still compares against 2.0.0
    res = cli(node, "upgrade", str(node.bundles.r09), "--yes")
    assert res.returncode == 2 and "older than the installed 2.0.0 (refused: rollback protection)" in res.stderr

    # an upgrade keeps the fine-tuned model (its base is in the new catalog) and the ports
    res = cli(node, "upgrade", str(node.bundles.r3), "--yes", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["from_version"] == "2.0.0" and out["to_version"] == "3.0.0"
    report = _status(node)
    assert report["release"]["version"] == "3.0.0" and report["endpoints"] == before["endpoints"]
    assert any(m["name"] == tuned and m["ready"] for m in report["models"]), report["models"]
