"""Which catalog model (and precision) a set of weights is -- from its headers, checked field by field.

The planner sizes memory from the catalog's numbers (layers, hidden size, KV heads, ...), so
weights filed under a model id must really be that model: a 4096-wide checkpoint filed as a
5120-wide one would plan the wrong KV cache and fail at load time, hours later, on a customer's
box. So an import compares what the files say (:mod:`appliance.models.formats`) with the catalog
entry and refuses a mismatch with one line naming the file, the field and both values:
``config.json: hidden_size 4096, catalog qwen3-32b says 5120``.
"""

from __future__ import annotations

from appliance.errors import UsageError
from appliance.models import formats as F
from appliance.models.manifest import Facts
from appliance.models.sources import Source

# the fields compared with the catalog, in the order a mismatch names them
FIELDS = ("architecture", "layers", "hidden_size", "attention_heads", "kv_heads", "vocab_size")
PARAMS_TOLERANCE = 0.05   # tied embeddings, biases and rounding in the catalog's figure
_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8"}


def inspect(source: Source) -> tuple[Facts, str | None, str]:
    """(facts, the precision the files are in or None, the file the facts come from)."""
    if source.layout == "gguf":
        g = F.read_gguf(source.files[0].path)
        archs = sorted(F.GGUF_ARCHITECTURES.get(g.architecture or "", {g.architecture})) if g.architecture else []
        facts = Facts(architecture="|".join(a for a in archs if a) or None, layers=g.layers,
                      hidden_size=g.hidden_size, attention_heads=g.attention_heads, kv_heads=g.kv_heads,
                      vocab_size=g.vocab_size, max_context=g.max_context, params=g.params, dtype=g.precision)
        return facts, g.precision, source.files[0].rel
    config = source.file("config.json")
    c = F.read_config(config.path)
    params = 0
    dtypes: dict[str, int] = {}
    for f in source.files:
        if f.rel.endswith(".safetensors"):
            st = F.read_safetensors(f.path)
            params += st.params
            for k, v in st.dtypes.items():
                dtypes[k] = dtypes.get(k, 0) + v
    precision = _hf_precision(c, dtypes)
    facts = Facts(architecture=c.architecture, layers=c.layers, hidden_size=c.hidden_size,
                  attention_heads=c.attention_heads, kv_heads=c.kv_heads, vocab_size=c.vocab_size,
                  max_context=c.max_context, params=params or None, dtype=c.dtype)
    return facts, precision, "config.json"


def _hf_precision(c: F.ConfigFacts, dtypes: dict[str, int]) -> str | None:
    if c.quantization:
        q = c.quantization.lower()
        return {"awq": "awq-int4", "fp8": "fp8", "compressed-tensors": "w8a8"}.get(q, "gptq-int4" if q == "gptq"
                                                                                 else None)
    if c.dtype and c.dtype in _DTYPES:
        return _DTYPES[c.dtype]
    if dtypes:
        top = max(dtypes, key=dtypes.get)
        return {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}.get(top)
    return None


def differences(facts: Facts, model_id: str, model) -> list[str]:
    """``field value, catalog <id> says value`` for each compared field that disagrees."""
    out = []
    for name in FIELDS:
        have = getattr(facts, name)
        want = getattr(model, name)
        if have is None or want is None:
            continue
        if name == "architecture":
            if want not in have.split("|"):
                out.append(f"architecture {have}, catalog {model_id} says {want}")
        elif have != want:
            out.append(f"{_hf_name(name)} {have}, catalog {model_id} says {want}")
    if facts.params and model.params and abs(facts.params - model.params) > PARAMS_TOLERANCE * model.params:
        out.append(f"parameters {facts.params:,}, catalog {model_id} says {model.params:,}")
    return out


def _hf_name(name: str) -> str:
    return {"layers": "num_hidden_layers", "attention_heads": "num_attention_heads",
            "kv_heads": "num_key_value_heads"}.get(name, name)


def choose(source: Source, facts: Facts, detected: str | None, origin: str, catalog, *,
           model: str | None = None, precision: str | None = None) -> tuple[str, str]:
    """(catalog model id, precision) for these weights, or a one-line UsageError saying why not."""
    if model is not None:
        entry = catalog.model(model)  # unknown id: its own error with a suggestion
        diffs = differences(facts, model, entry)
        if diffs:
            raise UsageError("; ".join(diffs), where=f"{origin}",
                             fix=f"these are not the weights of {model}: import them as the model they are "
                                 "(leave out --model to let appliance find it), or get the right files")
        return model, _precision(model, entry, detected, precision, origin, catalog)
    real = {mid: m for mid, m in catalog.models.items() if not m.demo and m.fine_tune is None}
    fits = [mid for mid, m in sorted(real.items()) if not differences(facts, mid, m)]
    hint = source.name_hint.lower().replace("_", "-")
    if len(fits) > 1:
        named = [mid for mid in fits if mid in hint or hint.startswith(mid.split("-instruct")[0])]
        fits = named if len(named) == 1 else fits
    if len(fits) == 1:
        mid = fits[0]
        return mid, _precision(mid, real[mid], detected, precision, origin, catalog)
    if fits:
        raise UsageError(f"these weights fit {len(fits)} catalog models ({', '.join(fits)})", where=origin,
                         fix=f"say which: --model {fits[0]}")
    nearest = min(sorted(real), key=lambda mid: len(differences(facts, mid, real[mid])))
    raise UsageError(f"no catalog model has these numbers; nearest is {nearest}: "
                     + "; ".join(differences(facts, nearest, real[nearest])), where=origin,
                     fix="add the model to the catalog (docs/catalog.md), or pass --model ID to see why it differs")


def _precision(model_id: str, entry, detected: str | None, given: str | None, origin: str, catalog) -> str:
    variants = [v.precision for v in entry.variants]
    if given is not None:
        if given not in variants:
            raise UsageError(f"{model_id} has no {given} variant (it has {', '.join(variants)})", where="--precision",
                             fix=f"one of: {', '.join(variants)}")
        if detected and detected != given and not _same_weights(detected, given, catalog):
            raise UsageError(f"the files are {detected}, not {given}", where=origin,
                             fix=f"import them as --precision {detected}" if detected in variants
                             else f"get the {given} files of {model_id}")
        return given
    if detected in variants:
        return detected
    if detected is None:
        if len(variants) == 1:
            return variants[0]
        raise UsageError(f"cannot tell the precision of these files ({model_id} has {', '.join(variants)})",
                         where=origin, fix=f"say which: --precision {variants[0]}")
    raise UsageError(f"the files are {detected}; catalog {model_id} has {', '.join(variants)}", where=origin,
                     fix=f"import a {' or '.join(variants)} release of {model_id}")


def _same_weights(a: str, b: str, catalog) -> bool:
    pa, pb = catalog.precisions.get(a), catalog.precisions.get(b)
    return (pa is not None and pa.derived_from == b) or (pb is not None and pb.derived_from == a)
