"""Read what a weights file says about itself -- headers only, never the weights.

Why our own readers: importing a model onto an air-gapped box must never run code from it or
load it (a pickle can execute anything; loading 60 GB to count parameters takes minutes). The
three formats that matter here are simple to read from their headers:

* ``config.json`` (Hugging Face layout): architecture, layers, hidden size, heads, vocabulary,
  dtype;
* safetensors: an 8-byte length, then a JSON header naming each tensor's dtype, shape and byte
  range. :func:`read_safetensors` checks that the ranges cover the data exactly, in bounds, with
  no overlap and sizes that match dtype x shape -- a header that lies is refused;
* GGUF: a small binary header (metadata key/values and tensor infos). :func:`read_gguf` reads
  it with bounds on every count and length, skipping big arrays (the vocabulary) by counting,
  and checks that the file reaches the end of its last tensor (offset + ggml type x shape, from
  the aligned start of the data) -- a copy cut short inside the weights is refused.

Every reader is bounded in what it reads and raises :class:`FormatError` (an ``ApplianceError``
naming the file) for anything malformed.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from appliance.errors import UsageError

MAX_SAFETENSORS_HEADER_BYTES = 100 * 1024 * 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_GGUF_KV = 100_000
MAX_GGUF_TENSORS = 1_000_000
MAX_GGUF_STRING_BYTES = 16 * 1024 * 1024
MAX_GGUF_ARRAY_ITEMS = 10_000_000

# safetensors dtype -> bytes per element
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class FormatError(UsageError):
    """A weights or config file is malformed or lies about its contents."""


# ---- config.json ---------------------------------------------------------------------------------
@dataclass
class ConfigFacts:
    architecture: str | None
    layers: int | None
    hidden_size: int | None
    attention_heads: int | None
    kv_heads: int | None
    vocab_size: int | None
    max_context: int | None
    dtype: str | None
    quantization: str | None


def read_config(path: Path) -> ConfigFacts:
    """The model facts of a Hugging Face ``config.json``."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise FormatError(f"is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB", where=str(path),
                          fix="a config.json is a few KiB: check the file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"is not valid JSON: {exc}", where=str(path), fix="restore the model's config.json") from None
    if not isinstance(data, dict):
        raise FormatError("is not a JSON object", where=str(path), fix="restore the model's config.json")
    text = data.get("text_config") if isinstance(data.get("text_config"), dict) else {}

    def num(*keys: str) -> int | None:
        for key in keys:
            for src in (data, text):
                value = src.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
        return None

    archs = data.get("architectures")
    heads = num("num_attention_heads", "n_head")
    quant = data.get("quantization_config")
    return ConfigFacts(
        architecture=archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None,
        layers=num("num_hidden_layers", "n_layer", "num_layers"),
        hidden_size=num("hidden_size", "n_embd", "d_model"),
        attention_heads=heads,
        kv_heads=num("num_key_value_heads", "multi_query_group_num") or heads,
        vocab_size=num("vocab_size", "padded_vocab_size"),
        max_context=num("max_position_embeddings", "seq_length", "n_positions"),
        dtype=str(data.get("torch_dtype") or text.get("torch_dtype") or "") or None,
        quantization=str(quant.get("quant_method")) if isinstance(quant, dict) and quant.get("quant_method") else None)


# ---- safetensors ---------------------------------------------------------------------------------
@dataclass
class SafetensorsFacts:
    tensors: int
    params: int
    dtypes: dict[str, int] = field(default_factory=dict)   # dtype -> number of elements
    data_bytes: int = 0


def read_safetensors(path: Path) -> SafetensorsFacts:
    """The header of a safetensors file, checked against the file: every tensor's byte range is
    in bounds, matches its dtype x shape, and the ranges cover the data region exactly."""
    size = path.stat().st_size
    where = str(path)
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise FormatError("is too short to be a safetensors file", where=where, fix="copy the file again")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > MAX_SAFETENSORS_HEADER_BYTES or 8 + header_len > size:
            raise FormatError(f"header length {header_len} is impossible for a file of {size} bytes", where=where,
                              fix="the file is truncated or not safetensors: copy it again")
        header = fh.read(header_len)
    try:
        doc = json.loads(header.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise FormatError("header is not valid JSON", where=where, fix="copy the file again") from None
    if not isinstance(doc, dict):
        raise FormatError("header is not a JSON object", where=where, fix="copy the file again")
    data_len = size - 8 - header_len
    ranges: list[tuple[int, int, str]] = []
    facts = SafetensorsFacts(tensors=0, params=0)
    for name, info in doc.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise FormatError(f"tensor {name!r}: entry is not an object", where=where, fix="copy the file again")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPES:
            raise FormatError(f"tensor {name!r}: unknown dtype {dtype!r}", where=where, fix="copy the file again")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise FormatError(f"tensor {name!r}: bad shape {shape!r}", where=where, fix="copy the file again")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise FormatError(f"tensor {name!r}: bad data_offsets {offsets!r}", where=where, fix="copy the file again")
        start, end = offsets
        elements = math.prod(shape)
        want = elements * SAFETENSORS_DTYPES[dtype]
        if not 0 <= start <= end <= data_len:
            raise FormatError(f"tensor {name!r}: bytes {start}-{end} lie outside the data ({data_len} bytes)",
                              where=where, fix="the header lies about its offsets: get the file from a trusted copy")
        if end - start != want:
            raise FormatError(f"tensor {name!r}: {end - start} bytes for {dtype} {shape} (needs {want})", where=where,
                              fix="the header lies about its sizes: get the file from a trusted copy")
        ranges.append((start, end, name))
        facts.tensors += 1
        facts.params += elements
        facts.dtypes[dtype] = facts.dtypes.get(dtype, 0) + elements
    position = 0
    for start, end, name in sorted(ranges):
        if start != position:
            what = "overlaps the one before" if start < position else f"leaves a gap of {start - position} bytes"
            raise FormatError(f"tensor {name!r} {what}", where=where,
                              fix="the header lies about its offsets: get the file from a trusted copy")
        position = end
    if position != data_len:
        raise FormatError(f"the tensors cover {position} of the {data_len} data bytes", where=where,
                          fix="the file is truncated or padded: copy it again")
    facts.data_bytes = data_len
    return facts


# ---- GGUF ----------------------------------------------------------------------------------------
GGUF_MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# llama.cpp's LLAMA_FTYPE (general.file_type) -> the catalog's precision names
GGUF_FILE_TYPES = {0: "gguf-f32", 1: "gguf-f16", 2: "gguf-q4_0", 3: "gguf-q4_1", 7: "gguf-q8_0", 8: "gguf-q5_0",
                   9: "gguf-q5_1", 10: "gguf-q2_k", 11: "gguf-q3_k_s", 12: "gguf-q3_k_m", 13: "gguf-q3_k_l",
                   14: "gguf-q4_k_s", 15: "gguf-q4_k_m", 16: "gguf-q5_k_s", 17: "gguf-q5_k_m", 18: "gguf-q6_k",
                   32: "gguf-bf16"}
# GGUF architecture -> the Hugging Face architectures it serves
GGUF_ARCHITECTURES = {"llama": {"LlamaForCausalLM", "MistralForCausalLM"}, "qwen2": {"Qwen2ForCausalLM"},
                      "qwen3": {"Qwen3ForCausalLM"}, "bert": {"BertModel", "BertForMaskedLM"},
                      "nomic-bert": {"NomicBertModel"}, "chatglm": {"ChatGLMModel"},
                      "deepseek2": {"DeepseekV3ForCausalLM", "DeepseekV2ForCausalLM"},
                      "gemma3": {"Gemma3ForCausalLM"}, "phi3": {"Phi3ForCausalLM"}}


@dataclass
class GgufFacts:
    version: int
    architecture: str | None
    layers: int | None
    hidden_size: int | None
    attention_heads: int | None
    kv_heads: int | None
    vocab_size: int | None
    max_context: int | None
    precision: str | None
    params: int
    tensors: int
    name: str | None = None
    metadata: dict = field(default_factory=dict)   # scalar and string values only


# ggml tensor type -> (elements per block, bytes per block), as llama.cpp's gguf package has them
# (gguf.constants.GGML_QUANT_SIZES; tests/models/test_import_rules.py checks the two agree)
GGML_TYPE_SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
                   9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
                   15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
                   21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8),
                   28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17)}
GGUF_DEFAULT_ALIGNMENT = 32


def tensor_bytes(ggml_type: int, elements: int) -> int:
    """Bytes a tensor of ``elements`` values of ``ggml_type`` occupies; 0 for a type this table does
    not know yet (a newer llama.cpp's), so such a tensor only bounds the data by its offset."""
    block, block_bytes = GGML_TYPE_SIZES.get(ggml_type, (1, 0))
    return elements // block * block_bytes


def _check_tensor_data(meta: dict, infos_end: int, data_end: int, last: str, size: int, where: str) -> None:
    """The file holds every tensor's bytes: the data starts at the end of the tensor infos rounded
    up to ``general.alignment``, and each tensor's offset is from there. Why: a copy cut short
    inside the weights has a whole header, so it would be imported -- and the engine fail at load."""
    alignment = meta.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or not 0 < alignment <= 1 << 20:
        raise FormatError(f"general.alignment {alignment!r} is not a plausible alignment", where=where,
                          fix="not a valid GGUF file")
    data_start = infos_end + (-infos_end % alignment)
    if data_start + data_end > size:
        raise FormatError(f"is truncated inside its tensor data: tensor {last!r} ends at byte "
                          f"{data_start + data_end:,}, the file has {size:,} bytes", where=where,
                          fix="the copy is incomplete: copy the file again and compare its size with the original")


class _Reader:
    def __init__(self, fh, size: int, where: str):
        self.fh, self.size, self.where = fh, size, where

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise FormatError("ends inside its header", where=self.where, fix="the file is truncated: copy it again")
        return data

    def skip(self, n: int) -> None:
        if self.fh.tell() + n > self.size:
            raise FormatError("ends inside its header", where=self.where, fix="the file is truncated: copy it again")
        self.fh.seek(n, 1)

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self, keep: bool = True) -> str | None:
        n = self.u64()
        if n > MAX_GGUF_STRING_BYTES:
            raise FormatError(f"a header string of {n} bytes", where=self.where, fix="not a valid GGUF file")
        if not keep:
            self.skip(n)
            return None
        return self.take(n).decode("utf-8", "replace")

    def value(self, vtype: int, keep: bool = True):
        if vtype in _SCALARS:
            fmt = _SCALARS[vtype]
            return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        if vtype == _STRING:
            return self.string(keep)
        if vtype == _ARRAY:
            item, count = self.u32(), self.u64()
            if count > MAX_GGUF_ARRAY_ITEMS:
                raise FormatError(f"an array of {count} items", where=self.where, fix="not a valid GGUF file")
            if item in _SCALARS:
                self.skip(struct.calcsize(_SCALARS[item]) * count)
            else:
                for _ in range(count):
                    self.value(item, keep=False)
            return ("array", count)
        raise FormatError(f"unknown value type {vtype}", where=self.where, fix="not a valid GGUF file")


def read_gguf(path: Path) -> GgufFacts:
    """The metadata and tensor infos of a GGUF file (v2/v3), with every count bounded."""
    where = str(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        r = _Reader(fh, size, where)
        if r.take(4) != GGUF_MAGIC:
            raise FormatError("is not a GGUF file (no GGUF magic)", where=where, fix="pass a .gguf model file")
        version = r.u32()
        if version not in (2, 3):
            raise FormatError(f"GGUF version {version} is not supported (2 and 3 are)", where=where,
                              fix="convert it with a current llama.cpp")
        n_tensors, n_kv = r.u64(), r.u64()
        if n_kv > MAX_GGUF_KV or n_tensors > MAX_GGUF_TENSORS:
            raise FormatError(f"{n_kv} metadata keys / {n_tensors} tensors is implausible", where=where,
                              fix="not a valid GGUF file")
        meta: dict = {}
        for _ in range(n_kv):
            key = r.string()
            vtype = r.u32()
            meta[key] = r.value(vtype, keep=not key.startswith("tokenizer.ggml.merges"))
        params = 0
        data_end = 0      # the end of the furthest tensor, relative to the start of the tensor data
        last = ""
        for _ in range(n_tensors):
            tensor = r.string()
            dims = r.u32()
            if dims > 8:
                raise FormatError(f"a tensor with {dims} dimensions", where=where, fix="not a valid GGUF file")
            shape = [r.u64() for _ in range(dims)]
            ggml_type = r.u32()
            offset = r.u64()
            if offset > size:
                raise FormatError(f"a tensor at offset {offset} beyond the file's {size} bytes", where=where,
                                  fix="the file is truncated: copy it again")
            elements = math.prod(shape)
            params += elements
            end = offset + tensor_bytes(ggml_type, elements)
            if end > data_end:
                data_end, last = end, tensor
        _check_tensor_data(meta, fh.tell(), data_end, last, size, where)
    arch = meta.get("general.architecture") if isinstance(meta.get("general.architecture"), str) else None

    def key(suffix: str) -> int | None:
        value = meta.get(f"{arch}.{suffix}") if arch else None
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    tokens = meta.get("tokenizer.ggml.tokens")
    ftype = meta.get("general.file_type")
    return GgufFacts(version=version, architecture=arch, layers=key("block_count"), hidden_size=key("embedding_length"),
                     attention_heads=key("attention.head_count"), kv_heads=key("attention.head_count_kv")
                     or key("attention.head_count"),
                     vocab_size=tokens[1] if isinstance(tokens, tuple) else None, max_context=key("context_length"),
                     precision=GGUF_FILE_TYPES.get(int(ftype)) if isinstance(ftype, int) else None, params=params,
                     tensors=n_tensors, name=meta.get("general.name") if isinstance(meta.get("general.name"), str)
                     else None,
                     metadata={k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool))})
