"""Bundle benchmark: verify throughput vs openssl, peak RSS of create/verify, apply vs docker load.

Prints numbers; asserts nothing. Needs the Docker engine. Builds its own images (FROM scratch,
random layers, labelled ``appliance.bench=bundle-<id>``) and removes them at the end.

    python3 benchmarks/bench_bundle.py [--size-mb 1100] [--layers 8] [--rounds 3] [--keep-dir DIR]

Goals (issue 8): verify >= 0.8x ``openssl dgst -sha256`` of the same file (beyond 1x by hashing
blobs in parallel); peak RSS <= 100 MB while creating and verifying a >= 1 GB bundle;
apply (verify + stage + load) <= 1.2x a plain ``docker load`` of the same images.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RUN = uuid.uuid4().hex[:8]
LABEL = ("appliance.bench", f"bundle-{RUN}")


def run_measured(argv: list[str], env: dict | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """(seconds, peak RSS MiB, result) of a child process (rusage of exactly that child)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = b"", b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    res = subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {res.stderr.strip()[-500:]}")
    return seconds, usage.ru_maxrss / 1024.0, res


def build_images(docker, work: Path, size_mb: int, layers: int) -> list[str]:
    """Two images sharing a base layer, random data split over ``layers`` layers in total."""
    per_layer = size_mb * 1024 * 1024 // layers
    ctx_dir = work / "ctx"
    ctx_dir.mkdir()
    names = []
    for i in range(layers):
        name = f"l{i}.bin"
        with open(ctx_dir / name, "wb") as fh:
            remaining = per_layer
            while remaining:
                chunk = os.urandom(min(remaining, 8 << 20))
                fh.write(chunk)
                remaining -= len(chunk)
        names.append(name)
    half = layers // 2
    refs = []
    for idx, own in enumerate([names[1:half + 1], names[half + 1:]]):
        ref = f"appliance-bench-{RUN}/img{idx}:1"
        dockerfile = "FROM scratch\n" + "".join(f"COPY {n} /{n}\n" for n in [names[0], *own])
        ctx = work / f"ctx{idx}.tar"
        with tarfile.open(ctx, "w") as tf:
            info = tarfile.TarInfo("Dockerfile")
            data = dockerfile.encode()
            info.size = len(data)
            import io

            tf.addfile(info, io.BytesIO(data))
            for n in [names[0], *own]:
                tf.add(ctx_dir / n, arcname=n)
        with open(ctx, "rb") as fh:
            docker.build_image(fh, ref, {LABEL[0]: LABEL[1]}, timeout_s=1800)
        ctx.unlink()
        refs.append(ref)
    shutil.rmtree(ctx_dir)
    return refs


def remove_images(docker, refs: list[str], ids: list[str]) -> None:
    for r in refs + ids:
        docker.remove_image(r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1100)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep-dir")
    args = ap.parse_args()

    from appliance.runtime import docker_adapter as da

    work = Path(args.keep_dir or tempfile.mkdtemp(prefix="bench-bundle-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(work / "data"), "APPLIANCE_INSTANCE": f"bench-{RUN}"}
    docker = da.Docker(timeout_s=1800)
    refs: list[str] = []
    ids: list[str] = []
    try:
        print(f"building {args.size_mb} MB of random layers ({args.layers} layers, 2 images sharing one) ...",
              flush=True)
        t = time.monotonic()
        refs = build_images(docker, work, args.size_mb, args.layers)
        ids = [docker.image_id(r) for r in refs]
        print(f"  built in {time.monotonic() - t:.1f}s: {', '.join(refs)}")

        appliance = [sys.executable, "-m", "appliance"]
        subprocess.run(appliance + ["bundle", "keygen", "--out-dir", str(work), "--name", "bench"], check=True,
                       capture_output=True, env=env)
        spec = work / "spec.yaml"
        spec.write_text("version: 1.0.0\nimages:\n" + "".join(f"  - {r}\n" for r in refs))
        bundle = work / "bench.bundle"

        secs, rss, _ = run_measured(appliance + ["bundle", "create", str(spec), "-o", str(bundle), "--key",
                                                 str(work / "bench.key")], env)
        size = bundle.stat().st_size
        print(f"\ncreate: {size / 1e9:.2f} GB bundle in {secs:.1f}s ({size / 1e6 / secs:.0f} MB/s), "
              f"peak RSS {rss:.0f} MiB (goal <= 100)")

        # verify vs openssl, both on a warm page cache, alternating
        venv = {**env, "APPLIANCE_BUNDLE_PUBKEYS": str(work / "bench.pub")}
        subprocess.run(["openssl", "dgst", "-sha256", str(bundle)], check=True, capture_output=True)
        ours, theirs, rss_v = [], [], 0.0
        for _ in range(args.rounds):
            s, r, _ = run_measured(["openssl", "dgst", "-sha256", str(bundle)])
            theirs.append(s)
            s, r, _ = run_measured(appliance + ["bundle", "verify", str(bundle)], venv)
            ours.append(s)
            rss_v = max(rss_v, r)
        best_o, best_t = min(ours), min(theirs)
        print(f"verify: {size / 1e9 / best_o:.2f} GB/s (whole process, best of {args.rounds}); "
              f"openssl dgst -sha256: {size / 1e9 / best_t:.2f} GB/s; ratio {best_t / best_o:.2f}x (goal >= 0.8x); "
              f"peak RSS {rss_v:.0f} MiB (goal <= 100)")
        sha = shutil.which("sha256sum")
        if sha:
            s, _, _ = run_measured([sha, str(bundle)])
            print(f"        (coreutils sha256sum: {size / 1e9 / s:.2f} GB/s)")

        # apply (verify + stage + load) vs plain docker load of the same images
        saved = work / "images.tar"
        subprocess.run(["docker", "save", "-o", str(saved), *refs], check=True)
        loads, applies = [], []
        apply_script = ("import sys, time\n"
                        "from pathlib import Path\n"
                        "from appliance.bundle.apply import load_bundle_images\n"
                        "load_bundle_images(Path(sys.argv[1]))\n")
        for _ in range(args.rounds):
            remove_images(docker, refs, ids)
            s, _, _ = run_measured(["docker", "load", "-i", str(saved)])
            loads.append(s)
            remove_images(docker, refs, ids)
            shutil.rmtree(work / "data" / "blobs", ignore_errors=True)
            s, rss_a, _ = run_measured([sys.executable, "-c", apply_script, str(bundle)], venv)
            applies.append(s)
        print(f"apply (verify + stage + load): {min(applies):.1f}s; plain docker load: {min(loads):.1f}s; "
              f"ratio {min(applies) / min(loads):.2f}x (goal <= 1.2x); apply peak RSS {rss_a:.0f} MiB")
        print(f"  all rounds: apply {[round(x, 1) for x in applies]}, docker load {[round(x, 1) for x in loads]}")
    finally:
        remove_images(docker, refs, [i for i in ids if i])
        for img in docker.list_images([f"{LABEL[0]}={LABEL[1]}"]):
            docker.remove_image(img["id"])
        docker.close()
        if not args.keep_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
