"""The shipped catalog validates; broken copies fail with one line: file, line, dotted path, suggestion."""

from __future__ import annotations

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
    demo = cat.engines["demo-engine"]
    assert (demo.demo, demo.build, demo.backend, demo.port, demo.health) == (
        True, "images/demo/engine", "cpu", 8000, "/health")
    assert {a for a in cat.apps} == {"customer-service", "knowledge-base", "code-assistant"}
    assert {r.role for r in cat.apps["knowledge-base"].roles} >= {"chat", "embedding"}
    assert all(a.image == f"appliance/app-{n}:0.1.0" and a.build == f"images/apps/{n}" for n, a in cat.apps.items())
    methods = {(r.backend, r.method): r.framework for r in cat.training.values()}
    assert methods[("cuda", "lora")] == methods[("cuda", "full")] == "llama-factory"
    assert methods[("cann", "lora")] == "mindspeed-llm"
    assert methods[("cpu", "lora")] == "demo"


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
