"""Reading the text that vendor management CLIs print (detection layer c).

Most vendor tools copy the look of ``nvidia-smi``: a banner (``Driver Version: …``), a table
whose header ends with a ``|====…|`` rule, then one block per device of two or three
``|``-separated rows, blocks divided by ``+----+`` rules (``hl-smi``, ``xpu-smi``, ``cnmon``,
``mx-smi``, ``ixsmi``; ``npu-smi`` walks its rows itself with :func:`cells`). WHY one module:
vendors move columns between versions, so every parser here returns raw cells and picks
fields by what they look like (a bus id looks like a bus id wherever it sits), and each
such rule (what a bus id, a memory pair or a power reading looks like) exists once.

The vendor modules keep only what is really vendor-specific: which banner proves the text
is theirs, and how the name cell is laid out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from appliance.inventory.models import Usage
from appliance.inventory.pci import normalize_bdf
from chip_drivers.base import ProbeFailure
from chip_drivers.tool_devices import ToolDevice

# "0000:3d:00.0", "00000000:04:00.0", "05:00.0" (the domain is optional)
BDF_RE = re.compile(r"(?<![0-9A-Fa-f:])((?:[0-9A-Fa-f]{4,8}:)?[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])(?![0-9A-Fa-f])")
# A memory cell: "0 MiB/ 23374 MiB", "858/65536 MiB", "64MiB / 32768MiB" (the total must say MiB,
# so other x/y cells of a device block, e.g. SR-IOV counts, never read as memory).
MEM_PAIR_RE = re.compile(r"(\d+)\s*(?:MiB)?\s*/\s*(\d+)\s*MiB", re.I)
# Every "used / total" pair in one known memory cell (npu-smi prints "AICore  HBM-used / HBM-total").
_ANY_PAIR_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:MiB|MB|Mib)?\s*/\s*(\d+(?:\.\d+)?)\s*(?:MiB|MB|Mib)?")
PCT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%")
TEMP_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*C\b")
# "106 W/ 250 W", "97W / NA", "N/A / N/A", "104W / 350W"
POWER_RE = re.compile(r"(\d+(?:\.\d+)?|N/?A)\s*W?\s*/\s*(\d+(?:\.\d+)?|N/?A)\s*W?\b", re.I)
_NUM_RE = re.compile(r"[-+]?\d+(?:\.\d+)?")
_BANNER_VERSION_RE = re.compile(r"([\w-]+(?: [\w-]+)* Version):\s*(\S+)")
_RULE_CHARS = set("|+-=: ")


# ---- cells and tables -------------------------------------------------------------------

def cells(line: str, *, complete: bool = False) -> list[str] | None:
    """``| a | b |`` -> ``["a", "b"]``; None for lines that are not table rows.

    ``complete=True`` also refuses rows not closed by ``|`` and rows holding only rule or
    blank characters (what a row-by-row walker such as the npu-smi parser wants); the block
    parser below accepts both, because it has found the rules itself.
    """
    line = line.rstrip()
    if not line.startswith("|") or len(line) < 2:
        return None
    if complete and (not line.endswith("|") or set(line) <= _RULE_CHARS):
        return None
    inner = line[1:-1] if line.endswith("|") else line[1:]
    return [c.strip() for c in inner.split("|")]


def _is_rule(line: str) -> bool:
    s = line.strip()
    return bool(s) and s[0] in "+|" and set(s) <= set("+-=|") and ("-" in s or "=" in s)


@dataclass
class BoxTable:
    """The header row cells and the device blocks (each a list of rows of cells)."""

    header: list[list[str]] = field(default_factory=list)
    blocks: list[list[list[str]]] = field(default_factory=list)


def parse_box_table(text: str) -> BoxTable:
    """Split the first box table after a ``|===|`` rule into device blocks.

    Rows before the rule (back to the previous ``+---+`` rule) are the column header. A
    blank line, a line that is not a table row, or a ``Processes`` row ends the table (a
    process table may follow: ``hl-smi`` prints it inside the same box).
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
        if row is None or "Processes" in row[0]:
            break
        block.append(row)
    if block:
        table.blocks.append(block)
    return table


def banner_versions(text: str) -> dict[str, str]:
    """``... Version: X`` pairs of the one-cell banner rows (``{"Driver Version": "1.15.1-62f612b"}``).

    Values are kept verbatim (a Gaudi driver version carries its build hash); first one wins.
    """
    versions: dict[str, str] = {}
    for line in text.splitlines():
        row = cells(line, complete=True)
        if row is not None and len(row) == 1:
            for key, value in _BANNER_VERSION_RE.findall(row[0]):
                versions.setdefault(key, value)
    return versions


@dataclass
class DeviceBlock:
    """One device block of a box table, with the fields every layout has in common."""

    index: int
    words: list[str]                  # the first cell after the index: name (+ vendor columns)
    rows: list[list[str]]
    bus_id: str | None                # first PCI address in the first row's other cells
    memory_used_mib: int | None
    memory_total_mib: int | None
    temperature_c: float | None       # from the second row's first cell
    power_w: float | None
    power_limit_w: float | None

    def cell(self, row: int, col: int) -> str:
        """A cell by position, ``""`` when the block has no such cell."""
        return self.rows[row][col] if row < len(self.rows) and col < len(self.rows[row]) else ""


def device_blocks(text: str, tool: str, header_words: tuple[str, ...], name_of=None) -> list[DeviceBlock]:
    """The device blocks of a box table, each checked to be a device.

    ``header_words`` must all appear in the column header (else the text is not this tool's
    listing); every block must start with a device number and hold a name (``name_of(words)``,
    default: the words joined) and a memory pair. Anything else raises :class:`ProbeFailure`
    naming ``tool``: garbage must never read as zero devices.
    """
    table = parse_box_table(text)
    header = " ".join(" ".join(row) for row in table.header)
    if not table.header or any(word not in header for word in header_words):
        raise ProbeFailure(f"{tool} output not recognised (no device table header): {first_line(text)!r}")
    name_of = name_of or " ".join
    out: list[DeviceBlock] = []
    for block in table.blocks:
        first = block[0]
        tokens = first[0].split() if first else []
        if not tokens or not tokens[0].isdigit():
            raise ProbeFailure(f"{tool} output not recognised: unexpected row {'|'.join(first)!r}")
        second = block[1][0] if len(block) > 1 and block[1] else ""
        mem = find_mem_pair(*(c for row in block for c in row))
        if not name_of(tokens[1:]) or mem is None:
            raise ProbeFailure(f"{tool} output not recognised: device row without name or memory "
                               f"({'|'.join(first)!r})")
        power = find_power(second)
        out.append(DeviceBlock(
            index=int(tokens[0]), words=tokens[1:], rows=block, bus_id=find_bdf(*first[1:]),
            memory_used_mib=mem[0], memory_total_mib=mem[1], temperature_c=find_number(TEMP_RE, second),
            power_w=power[0], power_limit_w=power[1]))
    return out


# ---- the nvidia-smi clones hl-smi and xpu-smi ---------------------------------------------

@dataclass
class BoxListing:
    versions: dict[str, str]          # "Driver Version" -> "1.15.1-62f612b"
    devices: list[ToolDevice]
    saw_table: bool                   # a device-table header was seen


def parse_smi_box(text: str, index_label: str, tool: str) -> BoxListing:
    """The nvidia-smi layout of ``hl-smi`` and Kunlunxin's ``xpu-smi``.

    Each device is a block ``N  Name  Persistence | Bus-Id Disp | ECC`` / ``Fan Temp Perf
    Pwr:Usage/Cap | used / total | Util ...`` (and, for xpu-smi, an L3 row that is ignored).
    Usage always lands in ``usage``; the caller drops it when usage was not requested.
    """
    blocks = device_blocks(text, tool, (index_label, "Name"),
                           name_of=lambda words: " ".join(words[:-1]))  # last word: Persistence-M
    devices = []
    for b in blocks:
        devices.append(ToolDevice(
            index=b.index, name=" ".join(b.words[:-1]), bus_id=b.bus_id, memory_mib=b.memory_total_mib,
            usage=Usage(utilization_pct=find_number(PCT_RE, b.cell(1, 2)), memory_used_mib=b.memory_used_mib,
                        temperature_c=b.temperature_c, power_w=b.power_w, power_limit_w=b.power_limit_w,
                        source=tool)))
    return BoxListing(versions=banner_versions(text), devices=devices, saw_table=True)


# ---- fields inside cells ---------------------------------------------------------------

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


def usage_pairs(text: str) -> list[tuple[int, int]]:
    """Every ``used / total`` pair in one memory cell, in order (``"3 / 15077  0 / 65536"``)."""
    return [(int(float(a)), int(float(b))) for a, b in _ANY_PAIR_RE.findall(text)]


def find_number(rx: re.Pattern, *texts: str) -> float | None:
    """Group 1 of the first match of ``rx`` in ``texts``, as a float."""
    for text in texts:
        m = rx.search(text or "")
        if m:
            return float(m.group(1))
    return None


def first_number(text: str | None) -> float | None:
    """The first number in a cell (``"93W"`` -> 93.0, ``"N/A"`` -> None)."""
    if not text:
        return None
    m = _NUM_RE.search(text)
    return float(m.group(0)) if m else None


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


def parse_csv_query(text: str, fields: tuple[str, ...], tool: str) -> list[dict[str, str]]:
    """``--query``-style CSV (``3, 6`` per line), with or without the header line."""
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in line.split(",")]
        if [v.lower() for v in values] == [f.lower() for f in fields]:
            continue
        if len(values) != len(fields):
            raise ProbeFailure(f"{tool}: expected {len(fields)} columns, got {line.strip()!r}")
        rows.append(dict(zip(fields, values)))
    return rows
