"""Weights an engine serves only converted (vllm_musa): planned per TP degree, made once on the node.

The vendor's converter runs inside its engine image, which is not on this machine; a locally
built image stands in for it (a real container on the real Docker engine, run exactly as the
deploy step runs the vendor's: its own entrypoint and the planned arguments, source read-only,
no network). What is checked: the plan points the service at the converted directory; the
conversion writes there atomically and is reused while nothing it depends on changes; a change
(TP degree, source weights) converts again; a failing converter stops with its log and leaves
nothing behind.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from appliance.catalog import load_catalog
from appliance.deploy import convert as C
from appliance.errors import RuntimeFailure
from appliance.planner.models import PlannedConversion

# the stand-in converter: argv as the vendor tool takes it (--in_file, --saved_dir, -tp)
CONVERTER = '''\
import argparse, pathlib, shutil, sys
ap = argparse.ArgumentParser()
ap.add_argument("--in_file"); ap.add_argument("--saved_dir"); ap.add_argument("-tp", type=int)
a = ap.parse_args()
src, out = pathlib.Path(a.in_file), pathlib.Path(a.saved_dir)
if (src / "FAIL").exists():
    print("converter: refusing these weights", flush=True)
    sys.exit(3)
for f in sorted(src.iterdir()):
    for rank in range(a.tp):
        (out / f"rank{rank}").mkdir(exist_ok=True)
        shutil.copy(f, out / f"rank{rank}" / f.name)
(out / "converted-for-tp").write_text(str(a.tp))
print("converted", flush=True)
'''


def test_the_plan_points_a_musa_engine_at_weights_converted_for_its_tp():
    from appliance.inventory.detect import detect
    from appliance.planner import plan
    from tests.support import NODES

    p = plan(detect(snapshot=str(NODES / "mthreads-s80-1"), usage=False), load_catalog(),
             models_dir="/srv/models")
    svc = next(s for s in p.services if s.engine == "vllm-musa")
    conv = svc.conversion
    out = f"/srv/models/.derived/{svc.model}/{svc.precision}/vllm-musa-tp{svc.tensor_parallel}"
    assert conv.entrypoint == ["python", "-m", "mttransformer.convert_weight"]
    assert conv.command == ["--in_file", svc.model_path, "--saved_dir", out, "-tp", str(svc.tensor_parallel)]
    assert svc.model_path == f"/srv/models/{svc.model}/{svc.precision}"
    assert svc.model_container_path == out and svc.command[svc.command.index("--model") + 1] == out
    from appliance.runtime.compose import inference_service

    binds = {b.source: b for b in inference_service(svc, None, load_catalog()).binds}
    assert binds[out].read_only and binds[svc.model_path].read_only
    assert all(s.conversion is None for s in p.services if s.engine != "vllm-musa")


@pytest.mark.docker
def test_a_conversion_runs_once_in_the_engine_image_and_is_reused(tmp_path, monkeypatch, docker):
    from appliance.runtime import images as I
    from tests.stack_support import templated_catalog

    base = next(s for s in _templated_plan(templated_catalog()).services)
    res = tmp_path / "res"
    (res / "images" / "converter").mkdir(parents=True)
    (res / "images" / "converter" / "main.py").write_text(CONVERTER)
    monkeypatch.setenv("APPLIANCE_RESOURCES", str(res))
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    tag = f"appliance/test-converter-{uuid.uuid4().hex[:8]}:0.1.0"
    inst = f"t-conv-{uuid.uuid4().hex[:6]}"
    source = tmp_path / "models" / "m" / "bf16"
    source.mkdir(parents=True)
    (source / "model.safetensors").write_bytes(b"weights")
    (source / "config.json").write_text("{}")

    def service(tp: int):
        out = tmp_path / "models" / ".derived" / "m" / "bf16" / f"engine-tp{tp}"
        conv = PlannedConversion(tool="stand-in converter", entrypoint=["python3", "/app/main.py"],
                                 command=["--in_file", str(source), "--saved_dir", str(out), "-tp", str(tp)],
                                 source_path=str(source), output_path=str(out), timeout_s=120)
        return base.model_copy(update={"name": "llm-m", "model": "m", "precision": "bf16", "image": tag,
                                       "build": "converter", "tensor_parallel": tp, "conversion": conv,
                                       "devices": [], "demo": False, "recipe": None}), out

    digest = {"value": "v1"}
    built = []
    try:
        svc, out = service(2)
        plan = _plan_of([svc])
        dry = C.convert_all(plan, None, docker, instance=inst, dry_run=True, source_digest=lambda ps: digest["value"])
        assert "would convert" in dry[0] and not out.exists()
        lines = C.convert_all(plan, None, docker, instance=inst, source_digest=lambda ps: digest["value"])
        built.append(I.ImageEnsurer(docker).ensure(tag, "converter").ref)
        assert "converted its weights" in lines[0]
        assert (out / "converted-for-tp").read_text() == "2"
        assert (out / "rank1" / "model.safetensors").read_bytes() == b"weights"
        marker = json.loads((out / C.MARKER).read_text())
        assert marker["tensor_parallel"] == 2 and marker["source_digest"] == "v1"
        assert not Path(str(out) + ".partial").exists()
        assert docker.list_containers([f"appliance.instance={inst}"]) == []   # one-off, removed
        again = C.convert_all(plan, None, docker, instance=inst, source_digest=lambda ps: digest["value"])
        assert "are current" in again[0]
        digest["value"] = "v2"                     # the source weights were re-imported
        assert "converted its weights" in C.convert_all(plan, None, docker, instance=inst,
                                                        source_digest=lambda ps: digest["value"])[0]
        svc4, out4 = service(4)                     # another TP degree: its own conversion
        C.convert_all(_plan_of([svc4]), None, docker, instance=inst, source_digest=lambda ps: "v2")
        assert (out4 / "converted-for-tp").read_text() == "4" and (out / "converted-for-tp").read_text() == "2"
        (source / "FAIL").write_text("x")
        digest["value"] = "v3"
        with pytest.raises(RuntimeFailure, match="exited with code 3.*refusing these weights"):
            C.convert_all(plan, None, docker, instance=inst, source_digest=lambda ps: digest["value"])
        assert not Path(str(out) + ".partial").exists()
        assert docker.list_containers([f"appliance.instance={inst}"]) == []
    finally:
        for ref in built:
            docker.remove_image(ref)


def _templated_plan(catalog):
    from appliance.inventory.detect import detect
    from appliance.planner import plan
    from tests.support import NODES

    return plan(detect(snapshot=str(NODES / "cpu-only"), usage=False), catalog, demo=True)


def _plan_of(services):
    from appliance.planner.models import Plan, PlannedImage

    return Plan(profile="default", catalog_version="test", node={}, services=services, apps=[],
                gateway=PlannedImage(image="appliance/gateway:0.1.0", port=8080), rejected=[], explain=[])
