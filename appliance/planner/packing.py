"""Bin-pack several models onto the node's devices.

Each model brings its candidates, best first. A depth-first search places the models
(largest footprint first) trying candidates in rank order, so the first complete
assignment found gives every model its best option that still leaves room for the others.
Devices are chosen best-fit (the fullest device that still has room, then the lowest
index) to keep whole devices free for later, larger models. Engines marked
``exclusive_devices`` get devices nobody else uses. When not everything fits, the
assignment placing the most models wins. The search is bounded (``planner.search_budget``
steps); past it, the best assignment found so far is kept. All choices are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.planner.candidates import Candidate, DeviceGroup


@dataclass
class Placement:
    candidate: Candidate
    positions: list[int]


@dataclass
class State:
    remaining: dict[tuple[str, int], int | None]
    users: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    exclusive: set[tuple[str, int]] = field(default_factory=set)


def new_state(groups: list[DeviceGroup]) -> State:
    remaining = {(g.key, s.position): s.capacity_mib for g in groups for s in g.slots}
    return State(remaining=remaining)


def fit(state: State, group: DeviceGroup, cand: Candidate, exclusive: bool) -> list[int] | None:
    """Positions of ``cand.tp`` devices in ``group`` that can take it, or None."""
    need = cand.need_mib
    usable = []
    for slot in group.slots:
        key = (group.key, slot.position)
        if key in state.exclusive:
            continue
        if exclusive and state.users.get(key):
            continue
        left = state.remaining[key]
        if left is not None and left < need:
            continue
        usable.append((left if left is not None else 0, slot.position))
    if len(usable) < cand.tp:
        return None
    usable.sort()
    return sorted(pos for _, pos in usable[:cand.tp])


def apply(state: State, group_key: str, cand: Candidate, positions: list[int], exclusive: bool, name: str) -> None:
    for pos in positions:
        key = (group_key, pos)
        if state.remaining[key] is not None:
            state.remaining[key] -= cand.need_mib
        state.users.setdefault(key, []).append(name)
        if exclusive:
            state.exclusive.add(key)


def undo(state: State, group_key: str, cand: Candidate, positions: list[int], exclusive: bool, name: str) -> None:
    for pos in positions:
        key = (group_key, pos)
        if state.remaining[key] is not None:
            state.remaining[key] += cand.need_mib
        state.users[key].remove(name)
        if exclusive:
            state.exclusive.discard(key)


class _OutOfBudget(Exception):
    pass


def pack(order: list[str], candidates: dict[str, list[Candidate]], groups: dict[str, DeviceGroup],
         exclusive_engines: set[str], budget: int) -> tuple[dict[str, Placement], State]:
    """Place models in ``order``; returns placements (missing = could not be placed) and the final state.

    Depth-first over candidates in rank order, with "leave this model out" as the last option
    of each level: the first complete assignment wins; otherwise the assignment placing the
    most models (the first such one found, i.e. the best ranked). A branch that cannot beat
    the best count found so far is pruned; past ``budget`` steps the best found is kept.
    """
    state = new_state(list(groups.values()))
    chosen: dict[str, Placement] = {}
    best: list = [-1, {}]
    steps = [0]

    def dfs(i: int) -> bool:
        if len(chosen) + (len(order) - i) <= best[0]:
            return False
        if i == len(order):
            best[0], best[1] = len(chosen), dict(chosen)
            return len(chosen) == len(order)
        mid = order[i]
        for cand in candidates.get(mid, []):
            steps[0] += 1
            if steps[0] > budget:
                raise _OutOfBudget
            excl = cand.engine in exclusive_engines
            positions = fit(state, groups[cand.group], cand, excl)
            if positions is None:
                continue
            apply(state, cand.group, cand, positions, excl, mid)
            chosen[mid] = Placement(cand, positions)
            if dfs(i + 1):
                return True
            undo(state, cand.group, cand, positions, excl, mid)
            del chosen[mid]
        return dfs(i + 1)  # leave this model out

    try:
        dfs(0)
    except _OutOfBudget:
        pass
    final = new_state(list(groups.values()))
    placements: dict[str, Placement] = best[1]
    for mid in order:
        if mid in placements:
            pl = placements[mid]
            excl = pl.candidate.engine in exclusive_engines
            apply(final, pl.candidate.group, pl.candidate, pl.positions, excl, mid)
    return placements, final
