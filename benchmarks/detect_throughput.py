"""Detection throughput: seconds of audio scored per wall second, and flam-search index speed.

    python benchmarks/detect_throughput.py [--sizes demo,base] [--minutes 10] [--queries 10]

For each audio size: a random-weight model (demo HTS-AT = the cpu_demo size, base =
the paper's; MiniLM-L6 text tower, as cpu_demo) is exported to a temporary directory and
opened with ``FLAM.load``; a ``--minutes`` recording of noise is scored against
``--queries`` texts with ``FLAM.detect`` (10 s windows, hop 5 s and hop 10 s, batch 8).
The first call compiles; the timed call is the second. Then ``flam-search index``'s
``build_index`` embeds ``--files`` 10 s WAV files (demo size only) and reports files/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

QUERIES = [
    "a dog barking",
    "a siren wailing",
    "rain on a roof",
    "a car engine starting",
    "people talking",
    "a door slamming",
    "birds singing",
    "a telephone ringing",
    "footsteps on gravel",
    "music playing",
]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine() -> str:
    name = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


def export_model(audio_size: str, out: str, tokenizer=None) -> str:
    """A random-weight model of ``audio_size`` (MiniLM-L6 text tower) exported to ``out``;
    ``tokenizer`` defaults to all-MiniLM-L6-v2's (the gpu check brings its own)."""
    import infer_fixtures
    from flax import nnx

    from flam_jax.export.export_dir import _materialise_rng_state, save_export
    from flam_jax.export.weights import get_weights, set_weights, weight_shapes
    from flam_jax.models.flam import build_model

    cfg = infer_fixtures.model_config()
    cfg.audio_size = audio_size
    model = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
    set_weights(model, infer_fixtures.random_weights(weight_shapes(model)))
    _materialise_rng_state(model)
    tokenizer = tokenizer or infer_fixtures.tokenizer()
    save_export(out, get_weights(model), cfg, tokenizer, source=f"benchmark {audio_size}")
    return out


def time_detect(flam, wave, queries, hop_s: float) -> tuple[float, float]:
    flam.detect(wave, queries, hop_s=hop_s)  # compile
    t0, c0 = time.perf_counter(), cpu_seconds()
    flam.detect(wave, queries, hop_s=hop_s)
    return time.perf_counter() - t0, cpu_seconds() - c0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="demo,base")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--files", type=int, default=24)
    args = p.parse_args()

    import jax

    from flam_jax.infer.api import FLAM
    from flam_jax.timeline import window_starts

    print(f"machine: {machine()}; jax {jax.__version__} {jax.default_backend()}")
    rng = np.random.default_rng(0)
    seconds = args.minutes * 60
    wave = rng.normal(0, 0.05, int(seconds * 48000)).astype(np.float32)
    queries = (QUERIES * (1 + args.queries // len(QUERIES)))[: args.queries]
    print("| size | hop (s) | windows | wall s | audio s per wall s | audio s per CPU s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            flam = FLAM.load(export_model(size, os.path.join(tmp, size)))
            for hop in (5.0, 10.0):
                wall, cpu = time_detect(flam, wave, queries, hop)
                windows = len(window_starts(wave.size, int(hop * 48000)))
                rates = f"{seconds / wall:.1f} | {seconds / cpu:.1f}"
                print(f"| {size} | {hop:g} | {windows} | {wall:.1f} | {rates} |")
        import soundfile

        from flam_jax.infer.search import build_index

        audio_dir = os.path.join(tmp, "audio")
        os.makedirs(audio_dir)
        for i in range(args.files):
            soundfile.write(os.path.join(audio_dir, f"{i:03d}.wav"), rng.normal(0, 0.05, 480000), 48000)
        model_dir = os.path.join(tmp, "demo")
        if not os.path.isdir(model_dir):
            export_model("demo", model_dir)
        demo = FLAM.load(model_dir)
        # Warm-up index of one file compiles; the timed run indexes all files afresh.
        warm = os.path.join(tmp, "warm")
        os.makedirs(warm)
        soundfile.write(os.path.join(warm, "w.wav"), rng.normal(0, 0.05, 480000), 48000)
        build_index(warm, model_dir, os.path.join(tmp, "index-warm"), progress=False, model=demo)
        t0, c0 = time.perf_counter(), cpu_seconds()
        build_index(audio_dir, model_dir, os.path.join(tmp, "index"), progress=False, model=demo)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        print(
            f"\nflam-search index (demo, {args.files} files of 10 s): {args.files / wall:.2f} files/s wall, "
            f"{args.files / cpu:.2f} files per CPU s"
        )


if __name__ == "__main__":
    main()
