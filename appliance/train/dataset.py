"""Dataset validation: a fine-tuning job starts only on a dataset every record of which is usable.

Why before anything runs: a bad record found by the trainer hours into a job (or silently
skipped by it) wastes the accelerators and the installer's time. So ``train submit`` reads
the whole file first and stops at the first bad record with ONE line naming the file, the
line number and what to fix -- before any container, volume or job record exists.

Accepted formats (JSON Lines, UTF-8, one record per line, blank lines ignored; the whole
file must use one format):

- **chat**: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``
  with at least one ``user`` and one ``assistant`` message (what the model learns to say).
- **instruction** (Alpaca style): ``{"instruction": "...", "input": "..." (optional),
  "output": "...", "system": "..." (optional)}``.

Other keys in a record are ignored (datasets often carry ids or sources).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, Field

from appliance.errors import UsageError

ROLES = ("system", "user", "assistant")


class DatasetSummary(BaseModel):
    path: str
    format: str = Field(description="chat | instruction")
    records: int
    words: int = Field(description="whitespace-separated words in all contents (a rough size)")
    size_bytes: int
    sha256: str


def _fail(path: Path, line: int, message: str, fix: str) -> UsageError:
    return UsageError(message, where=f"{path}:{line}", fix=fix)


def _text(value, path: Path, line: int, field: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if value is None:
        raise _fail(path, line, f"'{field}' is missing", f"add \"{field}\": \"...\"")
    if not isinstance(value, str):
        raise _fail(path, line, f"'{field}' must be a string, got {type(value).__name__}",
                    f"write \"{field}\": \"...\"")
    if required and not value.strip():
        raise _fail(path, line, f"'{field}' is empty", f"give '{field}' some text or remove the record")
    return value


def _chat(record: dict, path: Path, line: int) -> int:
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise _fail(path, line, "'messages' must be a non-empty list",
                    'write "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]')
    words = 0
    roles = set()
    for i, msg in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _fail(path, line, f"{field} must be an object with role and content",
                        '{"role": "user", "content": "..."}')
        role = msg.get("role")
        if role not in ROLES:
            raise _fail(path, line, f"{field}.role is {role!r}", f"use one of {', '.join(ROLES)}")
        words += len(_text(msg.get("content"), path, line, f"{field}.content").split())
        roles.add(role)
    for need in ("user", "assistant"):
        if need not in roles:
            raise _fail(path, line, f"the conversation has no {need} message",
                        f"add a {{\"role\": \"{need}\", \"content\": \"...\"}} message")
    return words


def _instruction(record: dict, path: Path, line: int) -> int:
    words = len(_text(record.get("instruction"), path, line, "instruction").split())
    if "output" not in record:
        raise _fail(path, line, "instruction record without 'output'", 'add "output": "<the expected answer>"')
    words += len(_text(record.get("output"), path, line, "output").split())
    words += len(_text(record.get("input"), path, line, "input", required=False).split())
    words += len(_text(record.get("system"), path, line, "system", required=False).split())
    return words


def record_format(record: dict) -> str | None:
    if "messages" in record:
        return "chat"
    if "instruction" in record:
        return "instruction"
    return None


def validate_dataset(path: str | Path) -> DatasetSummary:
    """Check every record of a JSONL dataset; raise UsageError (exit 2) at the first bad one."""
    p = Path(path)
    if not p.exists():
        raise UsageError("dataset file not found", where=str(p), fix="pass --dataset PATH to a .jsonl file")
    if not p.is_file():
        raise UsageError("dataset is not a regular file", where=str(p), fix="pass --dataset PATH to a .jsonl file")
    digest = hashlib.sha256()
    fmt: str | None = None
    first_line = 0
    records = words = 0
    with p.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            digest.update(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _fail(p, number, f"not UTF-8 (byte {exc.start + 1})", "save the file as UTF-8") from None
            if number == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _fail(p, number, f"not valid JSON: {exc.msg} (column {exc.colno})",
                            "one JSON object per line (JSON Lines)") from None
            if not isinstance(record, dict):
                raise _fail(p, number, f"a record must be a JSON object, got {type(record).__name__}",
                            'e.g. {"messages": [...]} or {"instruction": "...", "output": "..."}')
            kind = record_format(record)
            if kind is None:
                keys = ", ".join(sorted(record)[:6]) or "none"
                raise _fail(p, number, f"unknown record format (keys: {keys})",
                            'use chat {"messages": [...]} or instruction {"instruction": "...", "output": "..."}')
            if fmt is None:
                fmt, first_line = kind, number
            elif kind != fmt:
                raise _fail(p, number, f"{kind} record in a {fmt} dataset (line {first_line} is {fmt})",
                            "use one format per file")
            words += _chat(record, p, number) if kind == "chat" else _instruction(record, p, number)
            records += 1
    if records == 0:
        raise UsageError("dataset has no records", where=str(p), fix="add one JSON object per line")
    return DatasetSummary(path=str(p.resolve()), format=fmt or "chat", records=records, words=words,
                          size_bytes=p.stat().st_size, sha256=digest.hexdigest())
