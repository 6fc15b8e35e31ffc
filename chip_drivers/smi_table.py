"""Parsing of nvidia-smi-style box tables (``cnmon``, ``mx-smi``, ``ixsmi``).

These tools print a banner, then a table whose header ends with a ``|====…|`` rule, then
one block per device: two or three ``|``-separated rows, blocks divided by ``+----+``
rules. A blank or non-table line ends the table (a process table may follow). Vendors move
columns between versions, so parsers here return raw cells and each driver picks fields
by pattern (a bus id looks like a bus id wherever it sits), not by fixed offsets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from appliance.inventory.pci import normalize_bdf

BDF_RE = re.compile(r"(?<![0-9A-Fa-f:])([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])(?![0-9A-Fa-f])")
# "0 MiB/ 23374 MiB", "858/65536 MiB", "64MiB / 32768MiB"
MEM_PAIR_RE = re.compile(r"(\d+)\s*(?:MiB)?\s*/\s*(\d+)\s*MiB", re.I)
PCT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%")
TEMP_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*C\b")
# "106 W/ 250 W", "97W / NA", "N/A / N/A", "104W / 350W"
POWER_RE = re.compile(r"(\d+(?:\.\d+)?|N/?A)\s*W?\s*/\s*(\d+(?:\.\d+)?|N/?A)\s*W?\b", re.I)


@dataclass
class BoxTable:
    """The header row cells and the device blocks (each a list of rows of cells)."""

    header: list[list[str]] = field(default_factory=list)
    blocks: list[list[list[str]]] = field(default_factory=list)


def cells(line: str) -> list[str] | None:
    """``| a | b |`` -> ``["a", "b"]``; None for lines that are not table rows."""
    line = line.rstrip()
    if not line.startswith("|") or len(line) < 2:
        return None
    inner = line[1:-1] if line.endswith("|") else line[1:]
    return [c.strip() for c in inner.split("|")]


def _is_rule(line: str) -> bool:
    s = line.strip()
    return bool(s) and s[0] in "+|" and set(s) <= set("+-=|") and ("-" in s or "=" in s)


def parse_box_table(text: str) -> BoxTable:
    """Split the first box table after a ``|===|`` rule into device blocks.

    Rows before the rule (back to the previous ``+---+`` rule) are the column header.
    """
    table = BoxTable()
    lines = text.splitlines()
    start = None
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("|=") and set(s) <= set("|=+"):
            start = i
            break
    if start is None:
        return table
    j = start - 1
    header: list[list[str]] = []
    while j >= 0 and not _is_rule(lines[j]) and cells(lines[j]) is not None:
        header.insert(0, cells(lines[j]) or [])
        j -= 1
    table.header = header
    block: list[list[str]] = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        if _is_rule(line):
            if block:
                table.blocks.append(block)
                block = []
            continue
        row = cells(line)
        if row is None:
            break
        block.append(row)
    if block:
        table.blocks.append(block)
    return table


def find_bdf(*texts: str) -> str | None:
    """The first PCI address in any of ``texts``, normalized to ``0000:3d:00.0``."""
    for text in texts:
        m = BDF_RE.search(text or "")
        if m:
            return normalize_bdf(m.group(1))
    return None


def find_mem_pair(*texts: str) -> tuple[int, int] | None:
    """``(used_mib, total_mib)`` from the first ``used / total MiB`` pair."""
    for text in texts:
        m = MEM_PAIR_RE.search(text or "")
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def find_number(rx: re.Pattern, *texts: str) -> float | None:
    for text in texts:
        m = rx.search(text or "")
        if m:
            return float(m.group(1))
    return None


def find_power(*texts: str) -> tuple[float | None, float | None]:
    """``(draw_w, cap_w)``; a side printed as ``N/A``/``NA`` is None."""
    for text in texts:
        m = POWER_RE.search(text or "")
        if m:
            def num(s: str) -> float | None:
                try:
                    return float(s)
                except ValueError:
                    return None
            return num(m.group(1)), num(m.group(2))
    return None, None


def header_value(text: str, label: str) -> str | None:
    """The version-like token after ``label`` anywhere in ``text`` (``Driver Version: 4.3.8``)."""
    m = re.search(re.escape(label) + r"\s*:?\s*v?(\d+(?:\.\d+)+)", text)
    return m.group(1) if m else None


def first_line(text: str, limit: int = 80) -> str:
    """The first non-blank line, shortened: what an error message quotes of unexpected output."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""
