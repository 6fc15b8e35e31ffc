"""A bundle carries the wheels the catalog's image recipes install, and staging puts them where
recipe builds look (appliance.runtime.images.wheels_dir)."""

from __future__ import annotations

import pytest

from appliance.bundle.spec import BundleSpec, spec_files
from appliance.catalog.schema import ImageRecipe
from appliance.errors import RuntimeFailure
from appliance.runtime import images as I


def test_a_spec_carries_a_wheel_directory(tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "vllm_kunlun-0.15.1-py3-none-any.whl").write_bytes(b"zip")
    spec = BundleSpec(version="2.0.0", wheels="wheels/")
    files = spec_files(spec, tmp_path, "spec.yaml")
    assert [(k, rel) for k, rel, _, _ in files] == [("wheels", "wheels/vllm_kunlun-0.15.1-py3-none-any.whl")]


def test_staged_wheels_are_placed_for_recipe_builds(tmp_path):
    release = tmp_path / "release" / "wheels"
    release.mkdir(parents=True)
    (release / "vllm-0.15.1-cp310-none-any.whl").write_bytes(b"a")
    (release / "vllm_kunlun-0.15.1-py3-none-any.whl").write_bytes(b"b")
    dest = tmp_path / "data" / "wheels"
    recipe = ImageRecipe(base="vendor/base:1", wheels=["vllm==0.15.1", "vllm-kunlun==0.15.1"], tag="appliance/x:1")
    with pytest.raises(RuntimeFailure, match="not carried: vllm==0.15.1, vllm-kunlun==0.15.1"):
        I.recipe_wheels(recipe, dest)
    assert I.carry_wheels(release, dest) == ["vllm-0.15.1-cp310-none-any.whl", "vllm_kunlun-0.15.1-py3-none-any.whl"]
    assert (dest / "vllm_kunlun-0.15.1-py3-none-any.whl").stat().st_ino == \
        (release / "vllm_kunlun-0.15.1-py3-none-any.whl").stat().st_ino          # linked, not copied
    assert [w.name for w in I.recipe_wheels(recipe, dest)] == sorted(p.name for p in release.iterdir())
    assert I.carry_wheels(release, dest) and not list(dest.glob(".*.partial"))    # again: replaced in place
    assert I.carry_wheels(tmp_path / "none", dest) == []
