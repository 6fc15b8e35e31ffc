"""Which models to plan when none are requested, and which closed models are licensed.

The out-of-the-box set is one model per ``planner.default_roles`` role: the embedding
(and any other non-chat) role gets its best model that fits; then chat models are tried
from the highest ``quality`` down until one fits *together with* those. On a CPU-only
node chat models above ``planner.cpu_default_max_params`` are skipped (too slow to be a
good default; they can still be requested). Closed models join the default set only when
licensed. ``demo=True`` plans the built-in evaluation models instead (``builtin`` in the
catalog: small real models whose weights ship in Python packages).

On a CPU-only node whose model store is known (a deploy, ``appliance plan`` on the node itself), a
role none of whose default models has its weights stored gets the built-in evaluation model of
that role instead, with a note naming the better model and its import command: a CPU box without
imported weights then serves something real out of the box (``appliance init --yes``) instead of
refusing for weights it cannot have. With accelerators the default set stays what the hardware
deserves, and the deploy asks for its weights.
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


def _stored(mid: str, ctx, cands) -> bool:
    """The model store holds weights of ``mid`` that the planner can use (True when not considered)."""
    return ctx.available is None or any(f"{mid}@{c.precision}" in ctx.available for c in cands(mid)[0])


def _best_of_role(cat: Catalog, role: str, cands, ctx=None) -> tuple[str | None, str | None]:
    """(the best model of ``role`` that fits -- a stored one first --, a better one that is not stored)."""
    pool = sorted((m for m, spec in cat.models.items() if spec.role == role and spec.default and not spec.demo),
                  key=lambda m: (-cat.models[m].quality, m))
    fitting = [m for m in pool if cands(m)[0]]
    if ctx is not None and ctx.available is not None:
        stored = [m for m in fitting if _stored(m, ctx, cands)]
        if stored:
            better = fitting[0] if fitting[0] != stored[0] else None
            return stored[0], better
    return (fitting[0] if fitting else None), None


def _builtin_of_role(cat: Catalog, role: str, cands) -> str | None:
    """The built-in evaluation model of ``role`` that fits (the first by id), if any."""
    return next((m for m in sorted(cat.models) if cat.models[m].builtin and cat.models[m].role == role
                 and cands(m)[0]), None)


def _builtin_note(role: str, alt: str, better: str | None) -> str:
    hint = f" ({better} would fit: `appliance models import SOURCE --model {better}`, then re-run)" if better else ""
    return (f"default set: no default {role} model has its weights in the model store on this CPU-only node: "
            f"the built-in evaluation model {alt} instead{hint}")


def _import_note(mid: str, instead: str) -> str:
    return (f"default set: {mid} would fit and ranks above {instead}, but its weights are not in the model store: "
            f"`appliance models import SOURCE --model {mid}`, then re-run")


def choose_default_set(cat: Catalog, ctx, cands, by_key, demo: bool):
    """(requested ids, placements, rejected, explain notes) for a plan without --models."""
    from appliance.planner.core import _pack

    notes: list[str] = []
    rejected: list[Rejected] = []
    if demo:
        order = {r: i for i, r in enumerate(["chat", "completion", "embedding", "rerank"])}
        requested = sorted((m for m, spec in cat.models.items() if spec.builtin),
                           key=lambda m: (order[cat.models[m].role], m))
        notes.append(f"default set (--demo): the built-in evaluation models {', '.join(requested)} "
                     "(small; their weights ship in Python packages)")
        return requested, _pack(requested, cands, by_key, cat), rejected, notes

    fallback = not ctx.has_accelerators and ctx.available is not None  # see the module's docstring
    others: list[str] = []
    for role in cat.planner.default_roles:
        if role == "chat":
            continue
        best, better = _best_of_role(cat, role, cands, ctx)
        alt = _builtin_of_role(cat, role, cands) if fallback and (best is None or not _stored(best, ctx, cands)) \
            else None
        if alt is not None:
            others.append(alt)
            notes.append(_builtin_note(role, alt, best))
        elif best is None:
            notes.append(f"default set: no {role} model fits this node")
        else:
            others.append(best)
            if better:
                notes.append(_import_note(better, best))
    chat_pool = sorted((m for m, spec in cat.models.items() if spec.role == "chat" and spec.default and not spec.demo),
                       key=lambda m: (-cat.models[m].quality, m))
    if ctx.available is not None:  # stored models first, each part in quality order
        skipped = [m for m in chat_pool if not _stored(m, ctx, cands)]
        chat_pool = [m for m in chat_pool if _stored(m, ctx, cands)] + skipped
    limit = cat.planner.cpu_default_max_params
    eligible = [m for m in chat_pool if cat.models[m].params <= limit]  # a CPU-only node's default candidates
    alt = _builtin_of_role(cat, "chat", cands) if fallback and not any(_stored(m, ctx, cands) for m in eligible) \
        else None
    if alt is not None:
        requested = [alt] + others
        placements = _pack(requested, cands, by_key, cat)
        if all(m in placements for m in requested):
            better = next((m for m in eligible if cands(m)[0]), None)
            notes.insert(0, _builtin_note("chat", alt, better))
            return requested, placements, rejected, notes
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
            why = "best chat model that fits" + (" and whose weights are stored" if ctx.available is not None
                                                  and _stored(mid, ctx, cands) else "")
            notes.insert(0, f"default set: chat {mid} ({why}) + {', '.join(others) or 'nothing else'}")
            better = _better_unstored(cat, mid, ctx, cands)
            if better:
                notes.append(_import_note(better, mid))
            return requested, placements, rejected, notes
        rejected.append(Rejected(model=mid, code="default_set",
                                 reason="not in the default set: fits alone but not together with "
                                        f"{', '.join(others)}"))
    notes.append("default set: no chat model fits this node")
    return others, _pack(others, cands, by_key, cat), rejected, notes


def _better_unstored(cat: Catalog, chosen: str, ctx, cands) -> str | None:
    """A chat model ranked above ``chosen`` that fits but is not in the store (the import hint)."""
    if ctx.available is None or not _stored(chosen, ctx, cands):
        return None
    limit = cat.planner.cpu_default_max_params
    for mid, spec in sorted(cat.models.items(), key=lambda kv: (-kv[1].quality, kv[0])):
        if spec.role != "chat" or not spec.default or spec.demo or spec.quality <= cat.models[chosen].quality:
            continue
        if not ctx.has_accelerators and spec.params > limit:
            continue
        if cands(mid)[0] and not _stored(mid, ctx, cands):
            return mid
    return None
