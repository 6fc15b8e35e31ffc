"""Which models to plan when none are requested, and which closed models are licensed.

The out-of-the-box set is one model per ``planner.default_roles`` role: the embedding
(and any other non-chat) role gets its best model that fits; then chat models are tried
from the highest ``quality`` down until one fits *together with* those. On a CPU-only
node chat models above ``planner.cpu_default_max_params`` are skipped (too slow to be a
good default; they can still be requested). Closed models join the default set only when
licensed. ``demo=True`` plans the demo models on the demo engine instead.
"""

from __future__ import annotations

from datetime import datetime

from appliance.catalog.schema import Catalog
from appliance.inventory.models import Inventory
from appliance.planner.models import Rejected


def license_reasons(cat: Catalog, inventory: Inventory, models: list[str] | None, licenses,
                    now: datetime | None) -> dict[str, str | None]:
    """closed model id -> None when a valid license covers it, else why not."""
    wanted = [m for m in (models if models is not None else sorted(cat.models)) if cat.models[m].closed]
    if not wanted:
        return {}
    from appliance.licensing import entitlements

    return entitlements(wanted, inventory=inventory, licenses=licenses, now=now)


def _best_of_role(cat: Catalog, role: str, cands) -> str | None:
    pool = sorted((m for m, spec in cat.models.items() if spec.role == role and spec.default and not spec.demo),
                  key=lambda m: (-cat.models[m].quality, m))
    for mid in pool:
        if cands(mid)[0]:
            return mid
    return None


def choose_default_set(cat: Catalog, ctx, cands, by_key, demo: bool):
    """(requested ids, placements, rejected, explain notes) for a plan without --models."""
    from appliance.planner.core import _pack

    notes: list[str] = []
    rejected: list[Rejected] = []
    if demo:
        order = {r: i for i, r in enumerate(["chat", "completion", "embedding", "rerank"])}
        requested = sorted((m for m, spec in cat.models.items() if spec.demo and spec.default),
                           key=lambda m: (order[cat.models[m].role], m))
        notes.append(f"default set (demo): {', '.join(requested)} on the demo engine")
        return requested, _pack(requested, cands, by_key, cat), rejected, notes

    others: list[str] = []
    for role in cat.planner.default_roles:
        if role == "chat":
            continue
        best = _best_of_role(cat, role, cands)
        if best is None:
            notes.append(f"default set: no {role} model fits this node")
        else:
            others.append(best)
    chat_pool = sorted((m for m, spec in cat.models.items() if spec.role == "chat" and spec.default and not spec.demo),
                       key=lambda m: (-cat.models[m].quality, m))
    limit = cat.planner.cpu_default_max_params
    for mid in chat_pool:
        spec = cat.models[mid]
        if not ctx.has_accelerators and spec.params > limit:
            rejected.append(Rejected(model=mid, code="default_set",
                                     reason=f"not in the default set on a CPU-only node: {spec.params / 1e9:.1f}B "
                                            f"parameters > {limit / 1e9:.1f}B (request it with --models)"))
            continue
        found, rej = cands(mid)
        if not found:
            lic = [r for r in rej if r.code == "license"]
            if lic:
                rejected.append(lic[0].model_copy(update={"reason": f"not in the default set: {lic[0].reason}"}))
            else:
                from appliance.planner.core import _nofit_message

                rejected.append(Rejected(model=mid, code="default_set",
                                         reason=f"not in the default set: {_nofit_message([mid], rej)}"))
            continue
        requested = [mid] + others
        placements = _pack(requested, cands, by_key, cat)
        if all(m in placements for m in requested):
            notes.insert(0, f"default set: chat {mid} (best chat model that fits) + {', '.join(others) or 'nothing else'}")
            return requested, placements, rejected, notes
        rejected.append(Rejected(model=mid, code="default_set",
                                 reason=f"not in the default set: fits alone but not together with {', '.join(others)}"))
    notes.append("default set: no chat model fits this node")
    return others, _pack(others, cands, by_key, cat), rejected, notes
