"""llama.cpp's server, run in-process through xllamacpp: the appliance's CPU engine.

Why this launcher: the box has no registry, so the engine cannot be ``ghcr.io/ggml-org/llama.cpp``
pulled at install time. ``xllamacpp`` (a prebuilt manylinux wheel of llama.cpp with its native
C++ HTTP server) is carried into this locally built image instead; this file only turns
llama-server's own command-line options into xllamacpp's parameters and keeps the process alive.
The options are llama-server's (``-m``, ``--alias``, ``-c``, ``--parallel``, ``-t``, ``--embedding``,
``--pooling``, ``--reranking``, ``-b``, ``-ub``, ``--api-key-file``), so the catalog's start
arguments mean the same for this image and for upstream's.

The HTTP API is llama.cpp's: ``/health`` (200 once the model is loaded), ``/v1/models``,
``/v1/chat/completions`` and ``/v1/completions`` (both streaming), ``/v1/embeddings``, ``/v1/rerank``,
``/metrics``. SIGTERM/SIGINT end the process (exit 0).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="appliance-llama-cpp", description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True, help="the GGUF file")
    ap.add_argument("--alias", default=None, help="the model name the API reports and accepts")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("-c", "--ctx-size", type=int, default=4096, help="context tokens for all slots together")
    ap.add_argument("-np", "--parallel", type=int, default=1, help="parallel slots (concurrent requests)")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("-b", "--batch-size", type=int, default=2048)
    ap.add_argument("-ub", "--ubatch-size", type=int, default=512)
    ap.add_argument("--embedding", "--embeddings", action="store_true", help="serve /v1/embeddings")
    ap.add_argument("--pooling", choices=["none", "mean", "cls", "last", "rank"], default=None)
    ap.add_argument("--reranking", "--rerank", action="store_true", help="serve /v1/rerank")
    ap.add_argument("--api-key-file", default=None, help="a file whose first line is the key every request needs")
    ap.add_argument("--metrics", action="store_true", help="serve /metrics (Prometheus)")
    return ap.parse_args(argv)


def params(args: argparse.Namespace):
    import xllamacpp as x

    p = x.CommonParams()
    p.model.path = args.model
    if args.alias:
        p.model_alias = {args.alias}
    p.hostnames = [args.host]
    p.port = args.port
    p.n_ctx = args.ctx_size
    p.n_parallel = max(1, args.parallel)
    p.n_batch = args.batch_size
    p.n_ubatch = args.ubatch_size
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    # HTTP threads: enough to hold every request the gateway lets through at once (its per-engine
    # limit, 16) while the slots work through them; llama.cpp queues what its slots cannot take
    p.n_threads_http = max(16, 2 * args.parallel)
    p.endpoint_metrics = args.metrics
    if args.embedding or args.reranking:
        p.embedding = True
        pooling = "rank" if args.reranking else args.pooling  # None: the pooling the GGUF names
        if pooling:
            p.pooling_type = getattr(x.llama_pooling_type, f"LLAMA_POOLING_TYPE_{pooling.upper()}")
        # -b/-ub come from the plan (contracts.yaml "llama.cpp": an embedding input must fit the
        # physical batch, PR #7389), exactly as llama-server would take them
    if args.api_key_file:
        # the appliance's per-service secret (mounted read-only): every request but /health must carry
        # it as a Bearer token; an empty file must not start an open engine
        with open(args.api_key_file, encoding="utf-8") as fh:
            key = fh.readline().strip()
        if not key:
            raise ValueError(f"the key file {args.api_key_file} is empty")
        p.api_keys = [key]
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    import xllamacpp as x

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"appliance llama.cpp engine (xllamacpp {getattr(x, '__version__', '?')}): loading {args.model} "
          f"as {args.alias or args.model}, {args.threads} thread(s), {args.parallel} slot(s), "
          f"context {args.ctx_size}{', embeddings' if args.embedding else ''}{', rerank' if args.reranking else ''}",
          flush=True)
    try:
        server = x.Server(params(args))
    except Exception as exc:  # noqa: BLE001 - one clear line for `appliance logs`, then a failing exit
        print(f"error: the engine could not start: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"serving on {server.listening_address}", flush=True)
    stop.wait()
    print("stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
