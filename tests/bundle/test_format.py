"""Bundle format: create -> verify -> inspect round trip, deltas, and every tampering refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from appliance.bundle.manifest import blob_member, compare_versions
from appliance.bundle.reader import open_bundle, scan, verify_bundle
from appliance.errors import BundleError


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_round_trip_layout_and_verify(bundles, test_images, trust):
    names = [m.name for m in tarfile.open(bundles.r1).getmembers()]
    assert names[:2] == ["manifest.json", "manifest.sig"]
    assert all(n.startswith("blobs/sha256/") and len(n) == 13 + 64 for n in names[2:])
    report = verify_bundle(bundles.r1)
    assert report.ok and report.version == "1.0.0" and report.signer_key_id == trust.key_id
    opened = open_bundle(bundles.r1)
    m = opened.manifest
    # config digest is the engine's image id; the base layer shared by both images is stored once
    by_ref = {i.ref: i for i in m.images}
    assert by_ref[test_images.engine1].id == test_images.ids[test_images.engine1]
    assert by_ref[test_images.engine1].layers[0] == by_ref[test_images.tools].layers[0]
    assert len(names) - 2 == len(m.blobs) == len({d for i in m.images for d in [i.id, *i.layers]}) + len(m.files)
    assert [f.path for f in m.files] == ["playbooks/site.yml"]


def test_delta_holds_only_changed_blobs(bundles):
    full = open_bundle(bundles.r2, verify_signature=False)
    delta = open_bundle(bundles.r2_delta, verify_signature=False)
    base = open_bundle(bundles.r1, verify_signature=False)
    base_digests = {b.digest for b in base.manifest.blobs}
    # the manifest still lists every blob; only those the base lacks are in the file
    assert [b.digest for b in delta.manifest.blobs] == [b.digest for b in full.manifest.blobs]
    expected = {b.digest for b in full.manifest.blobs} - base_digests
    assert set(delta.index.blob_members) == expected
    assert len(expected) == 2  # engine:2's config and its one changed layer
    assert delta.manifest.base.version == "1.0.0"
    assert delta.manifest.base.manifest_sha256 == base.manifest_sha256
    r = bundles.reports
    assert r["r2_delta"].file_size_bytes < r["r2"].file_size_bytes / 4
    # the delta's estimate of the full size is within a few KiB (manifest flags) of the real one
    assert abs(r["r2_delta"].full_size_estimate_bytes - r["r2"].file_size_bytes) < 16 * 1024
    print(f"full bundle {r['r2'].file_size_bytes} bytes, delta {r['r2_delta'].file_size_bytes} bytes")


def test_cli_create_verify_inspect(test_images, keypair, other_keypair, spec_writer, tmp_path):
    spec = spec_writer(tmp_path / "r1", "1.0.0", [test_images.engine1], extra={"models": {"tiny": "tiny.bin"}})
    (spec.parent / "tiny.bin").write_bytes(b"weights" * 1000)
    out = tmp_path / "r1.bundle"
    res = cli("bundle", "create", str(spec), "-o", str(out), "--key", keypair.private_key, "--json")
    assert res.returncode == 0, res.stderr
    created = json.loads(res.stdout)
    assert created["version"] == "1.0.0" and created["files"] == 2 and out.stat().st_size == created["file_size_bytes"]
    res = cli("bundle", "verify", str(out), "--pubkey", keypair.public_key)
    assert res.returncode == 0 and res.stdout.startswith("ok: "), res.stderr
    res = cli("bundle", "verify", str(out), "--pubkey", other_keypair.public_key)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "not trusted" in res.stderr
    assert "Traceback" not in res.stderr
    res = cli("bundle", "inspect", str(out), "--json", env={"APPLIANCE_BUNDLE_PUBKEYS": keypair.public_key})
    info = json.loads(res.stdout)
    assert info["signature"] == "trusted" and info["images"][0]["ref"] == test_images.engine1
    assert {(g["kind"], g["files"]) for g in info["files"]} == {("playbooks", 1), ("model", 1)}
    res = cli("bundle", "inspect", str(out), env={"APPLIANCE_BUNDLE_PUBKEYS": other_keypair.public_key})
    assert res.returncode == 0 and "signature: untrusted" in res.stdout
    # a spec naming an image the engine lacks: one line, exit 2, no partial output file
    bad = spec_writer(tmp_path / "bad", "1.0.1", ["appliance-bt-missing/none:0"])
    res = cli("bundle", "create", str(bad), "-o", str(tmp_path / "bad.bundle"), "--key", keypair.private_key)
    assert res.returncode == 2 and "is not in the local Docker engine" in res.stderr
    assert not list(tmp_path.glob("bad.bundle*")) and not list(tmp_path.glob(".bundle-spool-*"))


def test_version_order():
    assert compare_versions("2.0.0", "1.9.9") == 1
    assert compare_versions("1.0", "1.0.0") == 0
    assert compare_versions("2.0.0-rc1", "2.0.0") == -1
    assert compare_versions("2.0.0-rc2", "2.0.0-rc10") == -1
    with pytest.raises(ValueError):
        compare_versions("two", "1")


# ---- every tampering refused with one clear line --------------------------------------------------
def _refused(path: Path, pubkey: str | None = None) -> str:
    with pytest.raises(BundleError) as info:
        verify_bundle(path, pubkey=Path(pubkey) if pubkey else None)
    line = info.value.one_line()
    assert "\n" not in line
    return line


def test_flipped_byte_in_blob(bundles, tamper, tmp_path, trust):
    bad = tamper.copy(bundles.r1, tmp_path / "bad.bundle")
    idx = scan(bad)
    digest, member = max(idx.blob_members.items(), key=lambda kv: kv[1].size)
    tamper.flip_byte(bad, member.offset_data + member.size // 2)
    line = _refused(bad)
    assert f"blob {digest} does not match its digest" in line


def test_flipped_byte_in_manifest(bundles, tamper, tmp_path, trust):
    bad = tamper.copy(bundles.r1, tmp_path / "bad.bundle")
    raw = bad.read_bytes()
    pos = raw.index(b'"version": "1.0.0"') + len('"version": "1.0.')
    tamper.flip_byte(bad, pos)  # 1.0.0 -> 1.0.1: still valid JSON, but not what was signed
    assert "manifest signature does not verify" in _refused(bad)


def test_untrusted_signer(bundles, other_keypair):
    line = _refused(bundles.r1, other_keypair.public_key)
    assert "which is not trusted on this node" in line


def test_no_trusted_keys_at_all(bundles, monkeypatch):
    monkeypatch.delenv("APPLIANCE_BUNDLE_PUBKEYS", raising=False)
    assert "no trusted bundle keys found" in _refused(bundles.r1)


@pytest.mark.parametrize("cut", ["half", "end-marker", "one-byte"])
def test_truncated_file(bundles, tmp_path, trust, tamper, cut):
    bad = tamper.copy(bundles.r1, tmp_path / "bad.bundle")
    size = bad.stat().st_size
    idx = scan(bundles.r1)
    last_end = max(m.offset_data + m.size + (-m.size % 512) for m in idx.blob_members.values())
    new_size = {"half": size // 2, "end-marker": last_end, "one-byte": last_end - 1}[cut]
    os.truncate(bad, new_size)
    assert "truncated" in _refused(bad)


def test_extra_file(bundles, tmp_path, trust, tamper):
    entries = tamper.members(bundles.r1)
    info = tarfile.TarInfo("blobs/sha256/" + "ab" * 32)
    info.size = 5
    bad = tamper.rewrite(bundles.r1, tmp_path / "bad.bundle", [*entries, (info, b"extra")])
    assert "not listed in the manifest (extra file)" in _refused(bad)
    info = tarfile.TarInfo("README.txt")
    info.size = 2
    bad = tamper.rewrite(bundles.r1, tmp_path / "bad2.bundle", [*entries, (info, b"hi")])
    assert "unexpected entry 'README.txt'" in _refused(bad)


def test_missing_blob(bundles, tmp_path, trust, tamper):
    entries = tamper.members(bundles.r1)
    dropped = entries.pop(3)
    bad = tamper.rewrite(bundles.r1, tmp_path / "bad.bundle", entries)
    assert f"blob sha256:{dropped[0].name.rsplit('/', 1)[1]} listed in the manifest is missing" in _refused(bad)


@pytest.mark.parametrize("name,kind,expect", [
    ("../evil", tarfile.REGTYPE, "escapes the bundle with '..'"),
    ("blobs/../../evil", tarfile.REGTYPE, "escapes the bundle with '..'"),
    ("/etc/evil", tarfile.REGTYPE, "has an absolute path"),
    ("blobs/sha256/" + "cd" * 32, tarfile.SYMTYPE, "is a symbolic link"),
    ("blobs/sha256/" + "ef" * 32, tarfile.LNKTYPE, "is a hard link"),
    ("blobs/sha256/" + "01" * 32, tarfile.CHRTYPE, "is a device or fifo"),
    ("blobs", tarfile.DIRTYPE, "unsupported type"),
])
def test_unsafe_entries(bundles, tmp_path, trust, tamper, name, kind, expect):
    entries = tamper.members(bundles.r1)
    info = tarfile.TarInfo(name)
    info.type = kind
    data = None
    if kind == tarfile.REGTYPE:
        data = b"x"
        info.size = 1
    elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = "/etc/shadow"
    entries.insert(2, (info, data))
    bad = tamper.rewrite(bundles.r1, tmp_path / "bad.bundle", entries)
    assert expect in _refused(bad)


def test_manifest_must_come_first(bundles, tmp_path, trust, tamper):
    entries = tamper.members(bundles.r1)
    entries[0], entries[1] = entries[1], entries[0]
    bad = tamper.rewrite(bundles.r1, tmp_path / "bad.bundle", entries)
    assert "first entry is 'manifest.sig'" in _refused(bad)


def test_appended_data_after_end(bundles, tmp_path, trust, tamper):
    bad = tamper.copy(bundles.r1, tmp_path / "bad.bundle")
    with open(bad, "ab") as fh:
        fh.write(b"\0" * 20480 + b"hidden")
    assert "unexpected data after the last entry" in _refused(bad)


def test_blob_sizes_match_manifest(bundles, tmp_path, trust, tamper):
    entries = tamper.members(bundles.r1)
    info, data = entries[2]
    info.size = len(data) - 1
    entries[2] = (info, data[:-1])
    bad = tamper.rewrite(bundles.r1, tmp_path / "bad.bundle", entries)
    assert "bytes, the manifest says" in _refused(bad)


def test_blob_member_name():
    assert blob_member("sha256:" + "a" * 64) == "blobs/sha256/" + "a" * 64


def test_manifest_json_is_signed_bytes(bundles, trust):
    opened = open_bundle(bundles.r1)
    assert json.loads(opened.index.manifest_bytes)["version"] == "1.0.0"


# ---- pure parts of apply: version policy, disk rule, the content store -----------------------------
def _manifest(version: str, upgrades_from: list[str]):
    from appliance.bundle.manifest import Manifest

    return Manifest(format_version=1, version=version, upgrades_from=upgrades_from, created="2025-01-01T00:00:00Z")


@pytest.mark.parametrize("version,upgrades_from,installed,allow,expect", [
    ("2.0.0", ["1.0.0"], None, False, None),                       # first install: no policy
    ("2.0.0", ["1.0.0"], "1.0.0", False, None),
    ("2.0.0", ["1.0.0", "1.1.0"], "1.1.0", False, None),
    ("2.0.0", ["1.1.0"], "1.0.0", False, "upgrades from 1.1.0, but this node runs 1.0.0"),
    ("2.0.0", [], "1.0.0", False, "upgrades from nothing (first installs only)"),
    ("1.0.0", [], "2.0.0", False, "older than the installed 2.0.0"),
    ("2.0.0", ["1.0.0"], "2.0.0", False, "already installed"),
    ("1.0.0", [], "2.0.0", True, None),                            # --allow-downgrade
    ("2.0.0", ["1.9.0"], "1.0.0", True, "upgrades from 1.9.0"),   # ... is no way around upgrades_from
])
def test_version_policy(version, upgrades_from, installed, allow, expect):
    from appliance.bundle.apply import check_applicable

    m = _manifest(version, upgrades_from)
    if expect is None:
        check_applicable(m, installed, allow_downgrade=allow, where="b")
    else:
        with pytest.raises(BundleError) as info:
            check_applicable(m, installed, allow_downgrade=allow, where="b")
        assert expect in info.value.message


def test_disk_rule_needs_twice_the_unpacked_bytes(tmp_path):
    from appliance.bundle.apply import disk_check

    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    ok = disk_check(free // 4, [str(tmp_path), str(tmp_path / "docker-root")])
    assert ok.ok and ok.required_bytes == 2 * (free // 4)
    bad = disk_check(free // 2 + (64 << 20), [str(tmp_path), str(tmp_path / "missing" / "deeper")])
    assert not bad.ok and bad.required_bytes > bad.free_bytes


def test_content_store_copies_and_drops_damaged_blobs(bundles, tmp_path):
    from appliance.bundle.contentstore import ContentStore
    from appliance.bundle.dockersave import load_stream

    opened = open_bundle(bundles.r1, verify_signature=False)
    store = ContentStore(tmp_path / "blobs")
    blobs = [b for b in opened.manifest.blobs]
    copied = store.ingest(opened.index, blobs[:2], hashed=False) + store.ingest(opened.index, blobs[2:])
    assert copied == sum(b.size for b in blobs) and all(store.has(b) for b in blobs)
    assert store.ingest(opened.index, blobs) == 0  # already staged: nothing copied again
    image = opened.manifest.images[0]
    victim = store.path(image.layers[-1])
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as fh:
        fh.seek(10)
        fh.write(b"X")
    dropped = []
    stream = load_stream([image], store.locator(None), on_mismatch=lambda d, p: (dropped.append(d), store.drop(d)))
    with pytest.raises(BundleError, match="sha256 mismatch"):
        for _ in stream:
            pass
    assert dropped == [image.layers[-1]] and not victim.exists()
    kept = {b.digest for b in blobs} - {image.layers[-1]}
    assert store.gc(kept) == 0 and store.digests() == kept
    assert store.gc(set()) > 0 and store.digests() == set()


def test_trust_installs_a_key_on_the_node(bundles, keypair, monkeypatch, tmp_path):
    monkeypatch.delenv("APPLIANCE_BUNDLE_PUBKEYS", raising=False)
    env = {"APPLIANCE_DATA_DIR": str(tmp_path / "node")}
    res = cli("bundle", "verify", str(bundles.r1), env=env)
    assert res.returncode == 2 and "no trusted bundle keys found" in res.stderr
    res = cli("bundle", "trust", keypair.public_key, env=env)
    assert res.returncode == 0 and keypair.key_id in res.stdout
    assert (tmp_path / "node" / "trust" / "bundle-keys" / f"{keypair.key_id}.pub").is_file()
    res = cli("bundle", "verify", str(bundles.r1), env=env)
    assert res.returncode == 0 and f"signed by {keypair.key_id}" in res.stdout, res.stderr
