"""`appliance models import` of a ~1 GB model directory against `cp -r` + `sha256sum`, same run.

    python3 benchmarks/bench_models.py [--gib 1.0] [--runs 3] [--shards 4]

Writes a Hugging Face layout directory (config.json, tokenizer.json and SHARDS safetensors files
of random bytes -- valid headers, real sizes) plus a catalog overlay entry with its numbers, then
alternates, RUNS times each:

* baseline: ``cp -r SRC DST && sha256sum DST/*`` (two reads of every byte: cp, then the hash);
* appliance: ``appliance models import SRC --model bench-model`` into a fresh data directory
  (one read of every byte: hashed while copied; every blob fsync-ed, manifest written, directory
  placed) -- the timing includes the process start and the header checks.

Prints each run and the ratio of the medians (goal: at most 1.2). The source stays in the page
cache for both (it was just written), so both measure the copy and hash work, not the source disk.
Also prints the baseline with a final ``sync``, since the import's files are durable when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHUNK = 8 * 1024 * 1024


def write_model(root: Path, total_bytes: int, shards: int) -> int:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": 1024, "torch_dtype": "bfloat16"}))
    (root / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {f"t{i}": i for i in range(1024)}}}))
    per = total_bytes // shards
    params = 0
    for i in range(shards):
        header = json.dumps({f"w{i}": {"dtype": "U8", "shape": [per], "data_offsets": [0, per]}}).encode()
        header += b" " * (-len(header) % 8)
        with open(root / f"model-{i + 1:05d}-of-{shards:05d}.safetensors", "wb") as fh:
            fh.write(struct.pack("<Q", len(header)) + header)
            left = per
            while left:
                n = min(CHUNK, left)
                fh.write(os.urandom(n))
                left -= n
        params += per
    return params


def overlay(data: Path, params: int) -> None:
    import yaml

    entry = {"name": "bench model", "family": "bench", "role": "chat", "architecture": "LlamaForCausalLM",
             "license": "none", "params": params, "layers": 4, "hidden_size": 256, "attention_heads": 4,
             "kv_heads": 4, "head_dim": 64, "vocab_size": 1024, "max_context": 2048, "default": False,
             "variants": [{"precision": "bf16"}]}
    (data / "catalog").mkdir(parents=True, exist_ok=True)
    (data / "catalog" / "bench.yaml").write_text(
        yaml.safe_dump({"schema_version": 1, "models": {"bench-model": entry}}))


def timed(cmd: list[str] | str, env: dict | None = None, shell: bool = False) -> float:
    t = time.monotonic()
    subprocess.run(cmd, check=True, env=env, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-models-", dir=os.environ.get("TMPDIR", "/var/tmp")))
    try:
        src = work / "src"
        params = write_model(src, int(args.gib * 1024 ** 3), args.shards)
        size = sum(p.stat().st_size for p in src.iterdir())
        print(f"model directory: {size / 1e9:.2f} GB in {len(list(src.iterdir()))} files; load "
              f"{os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
        base, base_sync, ours = [], [], []
        for run in range(args.runs):
            dst = work / f"cp-{run}"
            base.append(timed(f"cp -r {src} {dst} && sha256sum {dst}/* >/dev/null", shell=True))
            shutil.rmtree(dst)
            dst = work / f"cps-{run}"
            base_sync.append(timed(f"cp -r {src} {dst} && sha256sum {dst}/* >/dev/null && sync", shell=True))
            shutil.rmtree(dst)
            data = work / f"data-{run}"
            overlay(data, params)
            env = {**os.environ, "APPLIANCE_DATA_DIR": str(data)}
            ours.append(timed([sys.executable, "-m", "appliance", "models", "import", str(src), "--model",
                               "bench-model", "--quiet"], env=env))
            shutil.rmtree(data)
            print(f"run {run + 1}: cp -r + sha256sum {base[-1]:.2f}s (with sync {base_sync[-1]:.2f}s), "
                  f"appliance models import {ours[-1]:.2f}s")
        mb, ms, mo = statistics.median(base), statistics.median(base_sync), statistics.median(ours)
        print(f"median: cp -r + sha256sum {mb:.2f}s ({size / mb / 1e6:,.0f} MB/s), with sync {ms:.2f}s; "
              f"appliance models import {mo:.2f}s ({size / mo / 1e6:,.0f} MB/s)")
        print(f"ratio import / (cp + sha256sum): {mo / mb:.2f} (goal <= 1.2); against the synced baseline: "
              f"{mo / ms:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
