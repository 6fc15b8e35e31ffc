"""A bundle is bounded before it is trusted: the signature is checked before any entry after
the manifest is read, entries beyond what the manifest lists stop the reader at the first one,
and a manifest with too many entries or too deep a nesting is one clear error."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from appliance.bundle import manifest as M
from appliance.bundle.reader import open_bundle
from appliance.errors import BundleError

from .conftest import members, rewrite, write_spec


@pytest.fixture
def small_bundle(tmp_path, keypair):
    """A real signed bundle without images (playbooks only): two blobs after the manifest."""
    from appliance.bundle.create import create_bundle

    spec = write_spec(tmp_path / "spec", "1.0.0", [], extra={"wheels": "wheels"})
    (tmp_path / "spec" / "wheels").mkdir()
    (tmp_path / "spec" / "wheels" / "x-1.0-py3-none-any.whl").write_bytes(b"wheel")
    return Path(create_bundle(spec, tmp_path / "r1.bundle", Path(keypair.private_key)).file)


def _append_raw(path: Path, data: bytes) -> Path:
    """The bundle's manifest and signature, then ``data`` where the tar's next header would be."""
    entries = members(path)[:2]
    out = path.with_name("head-" + path.name)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for info, payload in entries:
            tf.addfile(info, io.BytesIO(payload))
    head = buf.getvalue().rstrip(b"\0")
    head += b"\0" * (-len(head) % tarfile.BLOCKSIZE)
    out.write_bytes(head + data)
    return out


def test_a_forged_signature_is_refused_before_the_rest_is_read(small_bundle, other_keypair, trust, tmp_path):
    """Garbage after the manifest would be a tar error if it were read first; the signature
    error comes first because nothing after the signature is read before it is checked."""
    bad = _append_raw(small_bundle, b"\xff" * 4096)
    rest = ("not a readable bundle", "unexpected data after the last entry")
    with pytest.raises(BundleError) as read:
        open_bundle(bad)                                       # trusted signature: the rest is read
    assert any(r in read.value.message for r in rest)
    from appliance.bundle import keys as keymod

    entries = members(small_bundle)
    sig = keymod.sign(entries[0][1], keymod.load_private_key(Path(other_keypair.private_key)))
    entries[1][0].size = len(sig)
    forged = rewrite(small_bundle, tmp_path / "forged.bundle", [entries[0], (entries[1][0], sig)])
    forged_with_garbage = _append_raw(forged, b"\xff" * 4096)
    with pytest.raises(BundleError) as exc:
        open_bundle(forged_with_garbage)
    assert not any(r in exc.value.message for r in rest) and "not trusted" in exc.value.message


def test_more_entries_than_the_manifest_lists_stop_at_the_first_extra(small_bundle, trust, tmp_path):
    entries = members(small_bundle)
    extra = tarfile.TarInfo("blobs/sha256/" + "ab" * 32)
    extra.size = 4
    flood = [(extra, b"xxxx")]
    for i in range(50):                                       # a flood of further entries behind it
        info = tarfile.TarInfo("blobs/sha256/" + f"{i:064x}")
        info.size = 1
        flood.append((info, b"y"))
    path = rewrite(small_bundle, tmp_path / "flood.bundle", entries + flood)
    with pytest.raises(BundleError, match=r"not listed in the manifest \(extra file\) -- it lists 2 blob entries"):
        open_bundle(path)


def test_manifest_entry_count_and_depth_are_bounded():
    many = {"format_version": M.FORMAT_VERSION, "version": "1.0.0", "created": "x",
            "blobs": [{"digest": f"sha256:{i:064x}", "size": 1} for i in range(M.MAX_MANIFEST_ENTRIES + 1)]}
    with pytest.raises(BundleError, match=f"lists {M.MAX_MANIFEST_ENTRIES + 1} entries"):
        M.parse_manifest(json.dumps(many).encode(), "m.json")
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(BundleError, match="nests too deeply"):
        M.parse_manifest(deep, "m.json")
