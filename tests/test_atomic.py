"""appliance.atomic: the target is the old content or the new one, with its mode from the start."""

from __future__ import annotations

import os
import stat

import pytest

from appliance.atomic import atomic_output, write_atomic, write_if_changed


def test_write_atomic_sets_the_mode_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "secrets" / "key"
    write_atomic(target, "s3cret\n", mode=0o600, owner_uid=os.getuid(), owner_gid=os.getgid())
    assert target.read_text() == "s3cret\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["key"]


def test_a_failed_stream_keeps_the_old_content(tmp_path):
    target = tmp_path / "routes.json"
    write_atomic(target, b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as fh:
        fh.write(b"half")
        raise RuntimeError("disk went away")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["routes.json"]


def test_write_if_changed_skips_identical_content(tmp_path):
    target = tmp_path / "f"
    assert write_if_changed(target, "a") is True
    mtime = target.stat().st_mtime_ns
    assert write_if_changed(target, "a") is False and target.stat().st_mtime_ns == mtime
    assert write_if_changed(target, "b") is True and target.read_text() == "b"
