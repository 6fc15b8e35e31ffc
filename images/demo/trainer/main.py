"""appliance templated TEST trainer -- fine-tunes a TINY model, not a language model; a test fixture, not shipped.

Used by ``appliance train`` in the tests, on the templated test stack (``demo-chat``), so the
whole fine-tuning flow -- dataset mount, progress in the logs, checkpoint files in the output
volume, registering and serving the result -- runs on any machine with Docker (and in CI). Its
recipes (``lora-cpu-demo``, ``full-cpu-demo``) live only in the tests' catalog overlay,
tests/fixtures/catalog/templated.yaml: the shipped catalog has none, so no user-facing command
starts it, and the wheel does not ship this directory. It is stdlib-only
(runs on the ``appliance/pyrt`` base) and really trains:

- the model is a bigram predictor over a hashed vocabulary (``min(vocab_size, 256)`` ids)
  with a hidden size of ``min(hidden_size, 32)``: frozen random embeddings ``E`` and output
  projection ``W`` (seeded from the base model id), ``logits = E[x] @ W``;
- LoRA (default): a rank-r adapter on the output projection, ``W + (alpha / r) * (B @ A)^T``
  with ``B`` starting at zero (as PEFT does); only ``A`` and ``B`` are trained;
- ``--full``: ``E`` and ``W`` themselves are trained;
- the examples are the (token, next token) pairs of what the model should say: the
  assistant messages (chat format) or the outputs (instruction format), each preceded by
  the last word of its prompt. Plain SGD on the cross-entropy; the printed loss is real.

Output (``output_dir``, the job's output volume): LoRA -> ``adapter_model.safetensors`` +
``adapter_config.json``; full -> ``model.safetensors`` + ``config.json``; both ->
``trainer_state.json`` (written last: its presence means the checkpoint is complete).
Progress lines: ``step=N/M loss=X eta_s=Y`` (parsed by appliance.train.progress).

Configuration: ``--config FILE`` (JSON, which is valid YAML): job, model, dataset, format,
output_dir, epochs, learning_rate, lora_rank, seed, step_delay_s, model_config
{hidden_size, vocab_size}. SIGTERM stops it at once (exit 143).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import signal
import struct
import sys
import time
from array import array

TRAINER = "appliance-demo-trainer"
VERSION = "0.1.0"
BATCH_PAIRS = 16
MAX_VOCAB = 256
MAX_HIDDEN = 32
_WORD = re.compile(r"[A-Za-z0-9\u00c0-\uffff]+")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fail(text: str, code: int = 2) -> None:
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()
    sys.exit(code)


def token_id(word: str, vocab: int) -> int:
    return int.from_bytes(hashlib.blake2b(word.lower().encode(), digest_size=4).digest(), "little") % vocab


def words(text: str) -> list[str]:
    return _WORD.findall(text or "")


# ---- data -------------------------------------------------------------------------------
def examples(path: str, vocab: int) -> tuple[list[tuple[int, int]], int]:
    """(token, next token) pairs of the text to learn, and the number of records."""
    pairs: list[tuple[int, int]] = []
    records = 0
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                fail(f"{path}:{number}: not valid JSON: {exc}")
            if not isinstance(rec, dict):
                fail(f"{path}:{number}: a record must be a JSON object")
            segments: list[tuple[str, str]] = []  # (prompt, answer)
            if isinstance(rec.get("messages"), list):
                prompt = ""
                for msg in rec["messages"]:
                    if not isinstance(msg, dict):
                        fail(f"{path}:{number}: a message must be an object")
                    content = str(msg.get("content") or "")
                    if msg.get("role") == "assistant":
                        segments.append((prompt, content))
                    prompt = content
            elif "instruction" in rec:
                prompt = " ".join(str(rec.get(k) or "") for k in ("instruction", "input"))
                segments.append((prompt, str(rec.get("output") or "")))
            else:
                fail(f"{path}:{number}: unknown record format")
            for prompt, answer in segments:
                toks = [token_id(w, vocab) for w in (words(prompt)[-1:] + words(answer))]
                pairs += list(zip(toks, toks[1:]))
            records += 1
    if not pairs:
        fail(f"{path}: no text to learn from")
    return pairs, records


# ---- the tiny model -----------------------------------------------------------------------
def matrix(rng: random.Random, rows: int, cols: int, scale: float) -> list[list[float]]:
    return [[rng.gauss(0.0, scale) for _ in range(cols)] for _ in range(rows)]


class Model:
    def __init__(self, base_id: str, vocab: int, hidden: int, rank: int, full: bool, seed: int):
        base_rng = random.Random(int.from_bytes(hashlib.sha256(base_id.encode()).digest()[:8], "little"))
        self.V, self.H, self.r, self.full = vocab, hidden, rank, full
        self.E = matrix(base_rng, vocab, hidden, 1.0 / math.sqrt(hidden))      # V x H
        self.W = matrix(base_rng, hidden, vocab, 1.0 / math.sqrt(hidden))      # H x V
        rng = random.Random(seed)
        self.A = matrix(rng, rank, hidden, 1.0 / math.sqrt(hidden))            # r x H
        self.B = [[0.0] * rank for _ in range(vocab)]                           # V x r (zero: no change at start)
        self.scale = 2.0  # lora_alpha / r with alpha = 2r

    def forward(self, x: int) -> tuple[list[float], list[float], list[float]]:
        h = self.E[x]
        logits = [0.0] * self.V
        for k, hk in enumerate(h):
            if hk:
                row = self.W[k]
                for j in range(self.V):
                    logits[j] += hk * row[j]
        u: list[float] = []
        if not self.full:
            u = [sum(a * b for a, b in zip(self.A[i], h)) for i in range(self.r)]
            for j in range(self.V):
                bj = self.B[j]
                logits[j] += self.scale * sum(bj[i] * u[i] for i in range(self.r))
        return h, u, logits

    def step(self, batch: list[tuple[int, int]], lr: float) -> float:
        """One SGD step on ``batch``; returns its mean cross-entropy (before the update)."""
        loss = 0.0
        n = len(batch)
        for x, y in batch:
            h, u, logits = self.forward(x)
            top = max(logits)
            exps = [math.exp(v - top) for v in logits]
            total = sum(exps)
            probs = [e / total for e in exps]
            loss -= math.log(max(probs[y], 1e-12))
            d = probs
            d[y] -= 1.0  # dLoss/dlogits
            if self.full:
                dh = [sum(self.W[k][j] * d[j] for j in range(self.V)) for k in range(self.H)]
                for k in range(self.H):
                    row, hk = self.W[k], h[k]
                    for j in range(self.V):
                        row[j] -= lr / n * hk * d[j]
                ex = self.E[x]
                for k in range(self.H):
                    ex[k] -= lr / n * dh[k]
            else:
                du = [self.scale * sum(self.B[j][i] * d[j] for j in range(self.V)) for i in range(self.r)]
                for j in range(self.V):
                    if d[j]:
                        bj, g = self.B[j], lr / n * self.scale * d[j]
                        for i in range(self.r):
                            bj[i] -= g * u[i]
                for i in range(self.r):
                    ai, g = self.A[i], lr / n * du[i]
                    for k in range(self.H):
                        ai[k] -= g * h[k]
        return loss / n


# ---- checkpoint files ---------------------------------------------------------------------
def write_safetensors(path: str, tensors: dict[str, list[list[float]]], metadata: dict[str, str]) -> None:
    """The safetensors format: u64 header length, JSON header, raw little-endian F32 data."""
    header: dict = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        rows = tensors[name]
        flat = array("f", [v for row in rows for v in row])
        if sys.byteorder == "big":
            flat.byteswap()
        data = flat.tobytes()
        header[name] = {"dtype": "F32", "shape": [len(rows), len(rows[0]) if rows else 0],
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)))
        fh.write(head)
        for blob in blobs:
            fh.write(blob)
    os.replace(tmp, path)


def write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def transpose(m: list[list[float]]) -> list[list[float]]:
    return [list(col) for col in zip(*m)]


# ---- main ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="appliance demo trainer (tiny model, not an LLM)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (say("stopped: SIGTERM"), os._exit(143)))
    try:
        with open(args.config, encoding="utf-8") as fh:
            cfg = json.load(fh)
    except (OSError, ValueError) as exc:
        fail(f"cannot read the job config {args.config}: {exc}")
    full = args.full or cfg.get("method") == "full"
    mc = cfg.get("model_config") or {}
    vocab = max(8, min(int(mc.get("vocab_size") or MAX_VOCAB), MAX_VOCAB))
    hidden = max(4, min(int(mc.get("hidden_size") or MAX_HIDDEN), MAX_HIDDEN))
    rank = max(1, min(int(cfg.get("lora_rank") or 8), hidden))
    epochs = max(1, int(cfg.get("epochs") or 1))
    lr = float(cfg.get("learning_rate") or 2.0)
    delay = float(cfg.get("step_delay_s") or 0.0)
    out_dir = cfg.get("output_dir") or "/output"
    seed = int(cfg.get("seed") or 42)
    base = str(cfg.get("model") or "demo-chat")

    pairs, records = examples(cfg.get("dataset") or "/data/dataset.jsonl", vocab)
    per_epoch = math.ceil(len(pairs) / BATCH_PAIRS)
    total = per_epoch * epochs
    say(f"{TRAINER} {VERSION}: DEMO {'full' if full else 'LoRA r=' + str(rank)} fine-tuning of {base} "
        f"(tiny bigram model: vocab {vocab}, hidden {hidden}); {records} records, {len(pairs)} token pairs, "
        f"{epochs} epoch(s), {total} steps")
    model = Model(base, vocab, hidden, rank, full, seed)
    rng = random.Random(seed)
    history = []
    started = time.monotonic()
    step = 0
    for epoch in range(epochs):
        order = list(pairs)
        rng.shuffle(order)
        for b in range(per_epoch):
            batch = order[b * BATCH_PAIRS:(b + 1) * BATCH_PAIRS]
            if not batch:
                continue
            loss = model.step(batch, lr)
            step += 1
            if delay:
                time.sleep(delay)
            elapsed = time.monotonic() - started
            eta = elapsed / step * (total - step)
            history.append({"step": step, "epoch": round(epoch + (b + 1) / per_epoch, 4), "loss": round(loss, 6)})
            say(f"step={step}/{total} loss={loss:.4f} eta_s={eta:.1f}")

    os.makedirs(out_dir, exist_ok=True)
    meta = {"format": "pt", "trainer": f"{TRAINER}/{VERSION}", "base_model": base, "demo": "true"}
    if full:
        write_safetensors(os.path.join(out_dir, "model.safetensors"),
                          {"embed_tokens.weight": model.E, "lm_head.weight": transpose(model.W)}, meta)
        write_json(os.path.join(out_dir, "config.json"), {
            "architectures": ["DemoForCausalLM"], "model_type": "appliance-demo", "vocab_size": vocab,
            "hidden_size": hidden, "base_model": base, "demo": True})
        files = ["model.safetensors", "config.json"]
    else:
        write_safetensors(os.path.join(out_dir, "adapter_model.safetensors"),
                          {"base_model.model.lm_head.lora_A.weight": model.A,
                           "base_model.model.lm_head.lora_B.weight": model.B}, meta)
        write_json(os.path.join(out_dir, "adapter_config.json"), {
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0,
            "target_modules": ["lm_head"], "base_model_name_or_path": base, "bias": "none",
            "fan_in_fan_out": False, "demo": True})
        files = ["adapter_model.safetensors", "adapter_config.json"]
    write_json(os.path.join(out_dir, "trainer_state.json"), {
        "global_step": step, "max_steps": total, "num_train_epochs": epochs, "log_history": history,
        "trainer": f"{TRAINER}/{VERSION}", "method": "full" if full else "lora", "base_model": base,
        "records": records, "train_runtime_s": round(time.monotonic() - started, 3),
        "first_loss": history[0]["loss"] if history else None, "final_loss": history[-1]["loss"] if history else None})
    files.append("trainer_state.json")
    say(f"done: {step} steps in {time.monotonic() - started:.1f}s; final loss "
        f"{history[-1]['loss'] if history else float('nan'):.4f}; wrote {', '.join(files)} to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
