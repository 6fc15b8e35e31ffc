"""Progress (step, total, loss, ETA) from a training container's log lines.

Trainers do not share a progress API, but each prints recognisable lines; the last match of
each kind wins:

- the demo trainer: ``step=12/40 loss=2.3456 eta_s=7.5``;
- Hugging Face Trainer / LLaMA-Factory: tqdm bars ``  30%|###  | 12/40 [00:10<00:23,  1.2it/s]``
  (step, total, ETA) and log dicts ``{'loss': 2.3456, ..., 'epoch': 0.9}``;
- Megatron / MindSpeed-LLM: `` iteration 12/ 40 | ... elapsed time per iteration (ms): 812.3 |
  ... lm loss: 2.345600E+00 |`` (ETA = remaining iterations x time per iteration).
"""

from __future__ import annotations

import re
import time
from typing import Iterable

from appliance.train.models import Progress

_DEMO = re.compile(r"\bstep=(\d+)/(\d+)\s+loss=([0-9.eE+-]+|nan)(?:\s+eta_s=([0-9.]+))?")
_TQDM = re.compile(r"\|\s*(\d+)/(\d+)\s*\[(?:(\d+):)?(\d+):(\d+)<(?:(\d+):)?(\d+):(\d+)")
_HF_LOSS = re.compile(r"['\"]loss['\"]:\s*([0-9.eE+-]+)")
_HF_EPOCH = re.compile(r"['\"]epoch['\"]:\s*([0-9.eE+-]+)")
_MEGATRON = re.compile(r"iteration\s+(\d+)\s*/\s*(\d+)")
_MEGATRON_LOSS = re.compile(r"lm loss:\s*([0-9.eE+-]+)")
_MEGATRON_MS = re.compile(r"elapsed time per iteration \(ms\):\s*([0-9.]+)")


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    if value is None or value != value:  # NaN
        return None
    return value


def _seconds(h: str | None, m: str, s: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s)


def parse(lines: Iterable[str], previous: Progress | None = None) -> Progress:
    """Fold log lines into a Progress (fields not seen keep ``previous``'s values)."""
    out = (previous or Progress()).model_copy()
    seen = False
    for raw in lines:
        # tqdm redraws with carriage returns: every segment is a reading
        for line in raw.split("\r"):
            m = _DEMO.search(line)
            if m:
                out.step, out.total_steps = int(m.group(1)), int(m.group(2))
                out.loss = _float(m.group(3))
                out.eta_s = _float(m.group(4))
                seen = True
                continue
            m = _MEGATRON.search(line)
            if m:
                out.step, out.total_steps = int(m.group(1)), int(m.group(2))
                loss = _MEGATRON_LOSS.search(line)
                if loss:
                    out.loss = _float(loss.group(1))
                ms = _MEGATRON_MS.search(line)
                if ms and out.total_steps:
                    out.eta_s = round(max(0, out.total_steps - out.step) * float(ms.group(1)) / 1000.0, 1)
                seen = True
                continue
            m = _TQDM.search(line)
            if m:
                out.step, out.total_steps = int(m.group(1)), int(m.group(2))
                out.eta_s = _seconds(m.group(6), m.group(7), m.group(8))
                seen = True
            loss = _HF_LOSS.search(line)
            if loss:
                out.loss = _float(loss.group(1))
                epoch = _HF_EPOCH.search(line)
                if epoch:
                    out.epoch = _float(epoch.group(1))
                seen = True
    if seen:
        out.updated_ts = time.time()
    return out
