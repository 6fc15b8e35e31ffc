"""The model store: weights imported offline, verified, stored once, placed where the plan mounts them.

* :mod:`appliance.models.sources` -- what an import was given (HF layout, HF cache, ModelScope,
  GGUF, an installed package) and its safety rules (no links out, no pickles by default);
* :mod:`appliance.models.formats` -- header readers (config.json, safetensors, GGUF); never loads
  weights;
* :mod:`appliance.models.match` -- which catalog model and precision the files are, field by field;
* :mod:`appliance.models.store` -- blobs, manifests, resumable imports, verification, views;
* :mod:`appliance.models.api` -- the operations the CLI and the deploy pipeline call.

See docs/models.md.
"""
