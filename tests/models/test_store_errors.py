"""The store's failures a user can meet are typed, one line, with a fix: an export that cannot
write, a corrupt manifest, a bad id given to ``remove`` (refused before asking anything)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.models import modelkit as K
from tests.models.modelkit import cli, imported, one_error_line


# ---- export --------------------------------------------------------------------------------------------
def test_an_export_into_a_path_that_cannot_be_a_directory_is_one_line(data, tmp_path):
    imported(data, K.gguf_file(tmp_path / "tiny.gguf"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = one_error_line(cli(data, "models", "export", K.TINY, str(blocker / "out")))
    assert str(blocker / "out") in line and "cannot write" in line and "(fix: " in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_an_export_into_a_read_only_directory_is_one_line(data, tmp_path):
    imported(data, K.gguf_file(tmp_path / "tiny.gguf"))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = one_error_line(cli(data, "models", "export", K.TINY, str(ro / "out")))
    finally:
        ro.chmod(0o755)
    assert "Permission denied" in line and "(fix: " in line, line


def test_a_full_disk_during_an_export_is_one_line_and_leaves_no_partial_copy(data, tmp_path, monkeypatch):
    from appliance.errors import ApplianceError
    from appliance.models import store as S
    from appliance.models.api import export_model

    imported(data, K.hf_dir(tmp_path / "src", shards=2))
    written = []

    def full(src, target, task):
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        written.append(target)
        target.write_bytes(b"the first file")

    monkeypatch.setattr(S, "_copy_blob", full)
    dest = tmp_path / "out"
    with pytest.raises(ApplianceError) as err:
        export_model(K.TINY, dest)
    line = err.value.one_line()
    assert str(dest) in line and "No space left on device" in line and "free" in (err.value.fix or ""), line
    assert not dest.exists(), "the partial export is removed"
    # an existing empty directory is kept (it was the user's), emptied again
    dest.mkdir()
    written.clear()
    with pytest.raises(ApplianceError):
        export_model(K.TINY, dest)
    assert dest.is_dir() and list(dest.iterdir()) == []


# ---- a corrupt manifest ----------------------------------------------------------------------------------
@pytest.mark.parametrize("corrupt", ["not-json", "wrong-fields"])
def test_a_corrupt_manifest_is_a_typed_error_naming_the_file_and_the_fix(data, tmp_path, corrupt):
    from appliance.errors import StateError
    from appliance.models.store import ModelStore

    imported(data, K.gguf_file(tmp_path / "tiny.gguf"))
    path = data / "modelstore" / "manifests" / f"{K.TINY}@gguf-f16.json"
    path.write_text("{ half a manifest" if corrupt == "not-json" else '{"model": 3}')
    store = ModelStore()
    for call in (lambda: store.get(K.TINY, "gguf-f16"), lambda: store.get(K.TINY), store.manifests):
        with pytest.raises(StateError) as err:
            call()
        assert err.value.where == str(path), err.value.one_line()
        assert "appliance models import" in err.value.fix and "rm " in err.value.fix, err.value.fix
    line = one_error_line(cli(data, "models", "verify"))
    assert str(path) in line


# ---- remove: the id first, then the question -----------------------------------------------------------
def test_remove_refuses_an_unknown_id_before_asking(data, tmp_path):
    imported(data, K.gguf_file(tmp_path / "tiny.gguf"))
    line = one_error_line(cli(data, "models", "remove", "no-such-model"))  # no --yes, no terminal
    assert "no model 'no-such-model' in the store" in line and "needs confirmation" not in line, line


def test_remove_of_a_model_with_several_precisions_asks_for_one_before_asking(data, tmp_path):
    imported(data, K.gguf_file(tmp_path / "tiny.gguf"))
    imported(data, K.hf_dir(tmp_path / "hf"))
    line = one_error_line(cli(data, "models", "remove", K.TINY))
    assert "2 precisions" in line and f"{K.TINY}@fp16" in line and "needs confirmation" not in line, line
    # a resolved id still needs --yes without a terminal
    line = one_error_line(cli(data, "models", "remove", f"{K.TINY}@fp16"))
    assert "needs confirmation" in line and f"{K.TINY}@fp16" in line
    res = cli(data, "models", "remove", f"{K.TINY}@fp16", "--yes")
    assert res.returncode == 0 and f"removed {K.TINY}@fp16" in res.stdout
    assert Path(data / "models" / K.TINY / "gguf-f16").is_dir()
