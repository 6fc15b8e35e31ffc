"""What each release changed (the console's releases page): real composed stacks, a real state file."""

from __future__ import annotations

from pathlib import Path

from appliance.inventory.detect import detect
from appliance.planner import plan as make_plan
from appliance.runtime import releases
from appliance.runtime.compose import compose
from appliance.state.store import StateStore
from tests.stack_support import templated_catalog

CPU = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "nodes" / "cpu-only"


def _planned(models: list[str]):
    inv = detect(snapshot=str(CPU), usage=False)
    cat = templated_catalog()
    plan = make_plan(inv, cat, models=models, demo=True)
    return plan, compose(plan, catalog=cat, inventory=inv, instance="unit").with_hashes()


def test_each_release_lists_services_images_models_and_version_against_the_one_it_replaced(tmp_path):
    store = releases.open_store(StateStore(tmp_path / "state.db"))
    plan1, stack1 = _planned(["demo-chat", "demo-embed"])
    first = releases.begin(store, "unit", plan1, stack1, source="init", version="1.0.0")
    releases.commit(store, "unit", first)

    plan2, stack2 = _planned(["demo-chat"])
    failed = releases.begin(store, "unit", plan2, stack2, source="upgrade", version="9.9.9")
    releases.fail(store, failed, "health gate failed")

    gw = stack2.service("gateway")
    swapped = gw.model_copy(update={"image_ref": "appliance/gateway:new"})
    stack3 = stack2.model_copy(update={"services": [swapped if s.name == "gateway" else s for s in stack2.services]})
    stack3 = stack3.model_copy(update={"hashes": {**stack3.hashes, "gateway": swapped.spec_hash()}})
    third = releases.begin(store, "unit", plan2, stack3, source="upgrade", version="1.1.0")
    releases.commit(store, "unit", third)

    rows = releases.history_with_changes(store, "unit")
    assert [r.id for r, _ in rows] == [third, failed, first]
    by_id = {r.id: c for r, c in rows}

    newest = by_id[third]
    assert newest.against == first  # the failed attempt in between was never in place
    assert (newest.from_version, newest.to_version) == ("1.0.0", "1.1.0")
    gone = sorted({s.name for s in stack1.services} - {t.name for t in stack3.services})
    assert "embed-demo-embed" in gone and "knowledge-base" in gone  # the RAG app needs the embedder
    assert newest.removed == gone and newest.added == []
    assert [(i.service, i.to_image) for i in newest.images] == [("gateway", "appliance/gateway:new")]
    assert newest.images[0].from_image == gw.run_image()
    assert newest.models_removed == ["demo-embed"] and newest.models_added == []
    assert "gateway" not in newest.reconfigured and not newest.empty

    assert by_id[failed].against == first and by_id[failed].to_version == "9.9.9"
    assert by_id[first].against is None and sorted(by_id[first].added) == sorted(s.name for s in stack1.services)

    # the same stack again: nothing changed
    again = releases.begin(store, "unit", plan2, stack3, source="init", version="1.1.0")
    releases.commit(store, "unit", again)
    same = releases.history_with_changes(store, "unit", limit=1)[0][1]
    assert same.against == third and same.empty
    store.close()
