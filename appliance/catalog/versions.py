"""Version strings as vendors write them, compared the way people mean them.

Vendors mix styles: CUDA ``12.8``, CANN ``8.1.RC1``, the Ascend driver ``24.1.rc2``, MindIE
``2.1.RC1``, NVIDIA drivers ``580.159.04``, DTK ``25.04.1``. A pre-release marker (``rc``,
``alpha``, ``beta``, ``dev``, ``b``) sorts *before* the release it precedes, so
``8.0.RC3 < 8.0.0 < 8.1.RC1``. Missing trailing parts count as zero (``12.8 == 12.8.0``).
Anything unparseable compares as text after all numbers, so comparison never raises.
"""

from __future__ import annotations

import re
from functools import lru_cache

_TOKEN = re.compile(r"(\d+)|([A-Za-z]+)")
_PRE = {"dev": -4, "a": -3, "alpha": -3, "b": -2, "beta": -2, "rc": -1, "t": -1}


@lru_cache(maxsize=4096)
def version_key(text: str) -> tuple:
    """A sortable key: numbers as (n, 0), pre-release words as (-k, 0) before their number."""
    parts: list[tuple[int, int, str]] = []
    for number, word in _TOKEN.findall(str(text).strip().lstrip("vV")):
        if number:
            parts.append((int(number), 0, ""))
        else:
            low = word.lower()
            if low in _PRE:
                parts.append((_PRE[low], 0, ""))
            else:  # a word we do not know (e.g. "post", a build tag): after the number
                parts.append((0, 1, low))
    while parts and parts[-1] == (0, 0, ""):
        parts.pop()
    return tuple(parts)


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older, equal or newer than ``b``."""
    ka, kb = version_key(a), version_key(b)
    width = max(len(ka), len(kb))
    pad = (0, 0, "")
    ka = ka + (pad,) * (width - len(ka))
    kb = kb + (pad,) * (width - len(kb))
    return (ka > kb) - (ka < kb)


def at_least(value: str, minimum: str) -> bool:
    return compare(value, minimum) >= 0


def at_most(value: str, maximum: str) -> bool:
    return compare(value, maximum) <= 0


def in_range(value: str, minimum: str | None, maximum: str | None) -> bool:
    """Inclusive on both ends; ``None`` means unbounded."""
    if minimum is not None and not at_least(value, minimum):
        return False
    if maximum is not None and not at_most(value, maximum):
        return False
    return True


def sort_key(text: str) -> tuple:
    """Key for ``sorted`` that pads like :func:`compare` (12 parts are plenty)."""
    key = version_key(text)
    return key + ((0, 0, ""),) * (12 - len(key))
