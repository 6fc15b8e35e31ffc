"""Hugging Face BERT sentence encoders -> GGUF, so llama.cpp can serve their embeddings.

Why here, and why this small: the CPU engine is llama.cpp, which reads GGUF; sentence-embedding
models (all-MiniLM-L6-v2, bge-small, ...) ship as safetensors + a WordPiece tokenizer. llama.cpp's
own converter (``convert_hf_to_gguf.py``) needs transformers and torch, which an air-gapped box
does not have. A BERT encoder is simple to write out: the same tensors under llama.cpp's names,
the hyperparameters, the vocabulary in llama.cpp's "phantom space" form, the special tokens --
following what that converter writes for ``BertModel`` (arch ``bert``, WPM tokenizer, mean or CLS
pooling from the sentence-transformers pooling config). Weights are copied byte for byte as F32
(no arithmetic, nothing to get subtly wrong), so the GGUF is the same model.

Only what :mod:`appliance.models.formats` already checked is read (the safetensors header was
validated before this runs), and only the standard library is used. The files are the ones the
source resolved (:class:`appliance.models.sources.Source`), never re-read from a directory: in a
Hugging Face cache snapshot they are links into ``blobs/``, named by hash. A file or field the
conversion needs (``tokenizer.json``, ``intermediate_size``, ...) that is missing or malformed is
one UsageError naming it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

from appliance.errors import UsageError
from appliance.models import formats as F

ALIGNMENT = 32
GGML_F32 = 0
LLAMA_FTYPE_ALL_F32 = 0
POOLING = {"mean": 1, "cls": 2}
# token types of llama.cpp's vocabulary
NORMAL, CONTROL, UNUSED = 1, 3, 5
_BERT_TENSORS = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
_BERT_LAYER = {
    "attention.self.query": "attn_q", "attention.self.key": "attn_k", "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output", "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up", "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm",
}
CONVERTIBLE = {"BertModel"}


def _gguf_name(hf: str) -> str | None:
    name = hf.removeprefix("bert.")
    if name in _BERT_TENSORS:
        return _BERT_TENSORS[name]
    if name.startswith("encoder.layer."):
        rest = name[len("encoder.layer."):]
        block, _, tail = rest.partition(".")
        stem, _, kind = tail.rpartition(".")
        if stem in _BERT_LAYER and kind in ("weight", "bias"):
            return f"blk.{int(block)}.{_BERT_LAYER[stem]}.{kind}"
    if name.startswith(("pooler.", "embeddings.position_ids")):
        return None  # not part of the encoder llama.cpp runs
    raise UsageError(f"tensor {hf!r} is not one a BERT encoder has", where="model.safetensors",
                     fix="only BertModel sentence encoders are converted; import a GGUF release instead")


# ---- a minimal GGUF writer (version 3, little-endian) ---------------------------------------------
def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _kv(key: str, value) -> bytes:
    out = _str(key)
    if isinstance(value, bool):
        return out + struct.pack("<I?", 7, value)
    if isinstance(value, int):
        return out + struct.pack("<II", 4, value)          # uint32
    if isinstance(value, float):
        return out + struct.pack("<If", 6, value)          # float32
    if isinstance(value, str):
        return out + struct.pack("<I", 8) + _str(value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return out + struct.pack("<IIQ", 9, 8, len(value)) + b"".join(_str(v) for v in value)
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return out + struct.pack("<IIQ", 9, 5, len(value)) + struct.pack(f"<{len(value)}i", *value)
    raise TypeError(f"GGUF value of {key}: {type(value).__name__}")


def _pad(n: int) -> int:
    return -n % ALIGNMENT


def write_gguf(path: Path, metadata: dict, tensors: list[tuple[str, list[int], Path, int, int]]) -> None:
    """Write a GGUF file: ``tensors`` are (name, numpy-order shape, source file, offset, F32 bytes)."""
    kv = b"".join(_kv(k, v) for k, v in metadata.items())
    infos = b""
    offset = 0
    for name, shape, _src, _off, size in tensors:
        dims = list(reversed(shape))  # ggml order: the fastest-moving dimension first
        infos += _str(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        infos += struct.pack("<IQ", GGML_F32, offset)
        offset += size + _pad(size)
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)) + kv + infos
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as out:
        out.write(header + b"\0" * _pad(len(header)))
        for _name, _shape, src, off, size in tensors:
            with open(src, "rb") as fh:
                fh.seek(off)
                left = size
                while left:
                    chunk = fh.read(min(left, 8 << 20))
                    if not chunk:
                        raise UsageError("ends inside a tensor", where=str(src), fix="copy the file again")
                    out.write(chunk)
                    left -= len(chunk)
            out.write(b"\0" * _pad(size))
    tmp.replace(path)


# ---- BERT ------------------------------------------------------------------------------------------
def _phantom(token: str) -> str:
    """llama.cpp's WPM vocabulary: word-start tokens get U+2581, ``##`` continuations lose it."""
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def _json(files: Mapping[str, Path], rel: str, where: str, *, needed: bool = True) -> dict | None:
    """One of the model's JSON files, by its name in the source (the source resolved it: in a
    cache snapshot the real file is a blob, not ``<dir>/<rel>``)."""
    path = files.get(rel)
    if path is None:
        if not needed:
            return None
        raise UsageError(f"has no {rel}, which the conversion to GGUF needs", where=where,
                         fix=f"copy the model's {rel} (in its Hugging Face release) beside its other files, "
                             "or import a GGUF release")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{rel} is not valid JSON: {exc}", where=where, fix=f"restore the model's own {rel}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {rel}: {exc.strerror or exc}", where=where,
                         fix="check the file's permissions") from None
    if not isinstance(data, dict):
        raise UsageError(f"{rel} is not a JSON object", where=where, fix=f"restore the model's own {rel}")
    return data


def _number(cfg: dict, key: str, where: str, *, default: float | None = None, real: bool = False):
    """A hyperparameter of ``config.json`` the GGUF header needs: a positive integer (or number)."""
    value = cfg.get(key, default)
    kinds = (int, float) if real else (int,)
    if not isinstance(value, kinds) or isinstance(value, bool) or value <= 0:
        what = "is missing" if key not in cfg else f"is {value!r}, not a positive {'number' if real else 'integer'}"
        raise UsageError(f"config.json: {key} {what}, which the conversion to GGUF needs", where=where,
                         fix="restore the model's own config.json (its Hugging Face release has the field)")
    return float(value) if real else int(value)


def _pooling(files: Mapping[str, Path], where: str) -> str:
    cfg = _json(files, "1_Pooling/config.json", where, needed=False)
    return "cls" if cfg and cfg.get("pooling_mode_cls_token") else "mean"


def bert_to_gguf(files: Mapping[str, Path], out: Path, *, name: str, where: str) -> Path:
    """Convert a Hugging Face ``BertModel`` (safetensors, WordPiece ``tokenizer.json``) to GGUF.

    ``files``: the source's files, name in the model directory -> the real file to read (what
    :mod:`appliance.models.sources` resolved and checked); ``where``: the source, for messages.
    A file or field the conversion needs that is missing or malformed is a UsageError naming it."""
    cfg = _json(files, "config.json", where)
    tok = _json(files, "tokenizer.json", where)
    model = tok.get("model") if isinstance(tok.get("model"), dict) else {}
    if (cfg.get("architectures") or [None])[0] not in CONVERTIBLE or model.get("type") != "WordPiece":
        raise UsageError("only BertModel encoders with a WordPiece tokenizer are converted to GGUF",
                         where=where, fix="import a GGUF release of this model instead")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise UsageError("tokenizer.json: model.vocab is not a map of tokens to ids", where=where,
                         fix="use the model's own tokenizer.json")
    vocab_size = _number(cfg, "vocab_size", where)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    if len(tokens) != vocab_size or [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise UsageError(f"tokenizer.json: its {len(tokens)} tokens do not number 0..{vocab_size - 1}", where=where,
                         fix="use the model's own tokenizer.json")
    added = tok.get("added_tokens") if isinstance(tok.get("added_tokens"), list) else []
    special = {a.get("content") for a in added if isinstance(a, dict) and a.get("special")}
    types = [CONTROL if t in special else (UNUSED if t.startswith("[unused") else NORMAL) for t in tokens]
    meta = {
        "general.architecture": "bert", "general.name": name, "general.file_type": LLAMA_FTYPE_ALL_F32,
        "bert.context_length": _number(cfg, "max_position_embeddings", where),
        "bert.embedding_length": _number(cfg, "hidden_size", where),
        "bert.feed_forward_length": _number(cfg, "intermediate_size", where),
        "bert.block_count": _number(cfg, "num_hidden_layers", where),
        "bert.attention.head_count": _number(cfg, "num_attention_heads", where),
        "bert.attention.layer_norm_epsilon": _number(cfg, "layer_norm_eps", where, default=1e-12, real=True),
        "bert.attention.causal": False, "bert.pooling_type": POOLING[_pooling(files, where)],
        "tokenizer.ggml.token_type_count": _number(cfg, "type_vocab_size", where, default=2),
        "tokenizer.ggml.model": "bert", "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": [_phantom(t) for t in tokens], "tokenizer.ggml.token_type": types,
    }
    for key, content in (("unknown", "[UNK]"), ("seperator", "[SEP]"), ("padding", "[PAD]"), ("cls", "[CLS]"),
                         ("mask", "[MASK]")):
        if content in vocab:
            meta[f"tokenizer.ggml.{key}_token_id"] = int(vocab[content])
    tensors = []
    for shard in [files[rel] for rel in sorted(files) if rel.endswith(".safetensors")]:
        F.read_safetensors(shard)  # the header is checked again: offsets in bounds, sizes exact
        with open(shard, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        base = 8 + n
        for hf, info in sorted(header.items()):
            if hf == "__metadata__":
                continue
            gg = _gguf_name(hf)
            if gg is None:
                continue
            if info["dtype"] != "F32":
                raise UsageError(f"tensor {hf} is {info['dtype']}; the converter copies F32 weights", where=str(shard),
                                 fix="import an F32 release, or a GGUF of the model")
            start, end = info["data_offsets"]
            tensors.append((gg, list(info["shape"]), shard, base + start, end - start))
    if not tensors:
        raise UsageError("no BERT tensors found in its *.safetensors", where=where, fix="check the model's files")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_gguf(out, meta, tensors)
    return out
