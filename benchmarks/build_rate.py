"""Build rate of ``data/build_dataset.py`` (clips per second, and per core) for 0, 1 and N
encoding workers, on webdataset shards of synthetic recordings shaped like a real corpus.

    python benchmarks/build_rate.py [--clips 160] [--workers 2] [--repeats 2]

The corpus: stereo 44.1 kHz FLAC recordings of 2–30 s (log-uniform, so some are cut into
10 s pieces), in 4 tar shards. Each round builds it once per worker count, the counts in
turn (0, 1, N, 0, 1, N, ...), into a fresh TFDS folder: the read, decode, resample,
FLAC encode, TFDS write and the metadata index of each run. The minimum per count is the
figure. Prints one JSON line per run and a summary table.
"""

import argparse
import io
import json
import os
import shutil
import tempfile
import time

import numpy as np
import soundfile
import webdataset

from flam_jax.data import builders


def make_shards(folder: str, clips: int, seed: int = 0) -> float:
    """Write ``clips`` recordings into 4 shards; returns their total seconds."""
    rng = np.random.default_rng(seed)
    rate, total = 44_100, 0.0
    sinks = [webdataset.TarWriter(os.path.join(folder, f"shard-{k}.tar")) for k in range(4)]
    for i in range(clips):
        seconds = float(np.exp(rng.uniform(np.log(2.0), np.log(30.0))))
        total += seconds
        n = round(seconds * rate)
        wave = (
            0.1 * rng.standard_normal((n, 2)) + 0.2 * np.sin(np.arange(n) * rng.uniform(0.01, 0.2))[:, None]
        )
        out = io.BytesIO()
        soundfile.write(out, wave.astype(np.float32), rate, format="FLAC")
        sinks[i % 4].write(
            {"__key__": f"clip{i:05d}", "flac": out.getvalue(), "json": {"text": [f"sound {i}"]}}
        )
    for sink in sinks:
        sink.close()
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=160)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="build_rate_")
    shards = os.path.join(root, "shards")
    os.makedirs(shards)
    seconds = make_shards(shards, args.clips)
    counts = sorted({0, 1, args.workers})
    times = {w: [] for w in counts}
    records = None
    for _ in range(args.repeats):
        for workers in counts:
            out = os.path.join(root, f"tfds_{workers}")
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            builders.build("captioned", shards, out, "webdataset", workers=workers)
            took = time.perf_counter() - start
            times[workers].append(took)
            n = len(builders.load("captioned", out, "train", "webdataset"))
            records = n if records is None else records
            assert n == records, (n, records)
            print(json.dumps({"workers": workers, "seconds": round(took, 2), "records": n}), flush=True)
    print(f"\n{args.clips} recordings, {seconds / 60:.1f} min of audio, {records} records after the 10 s cut")
    print("| workers | best s | clips/s | clips/s per core | audio s per s |")
    print("|---|---|---|---|---|")
    for workers in counts:
        best = min(times[workers])
        cores = max(workers, 1)
        print(
            f"| {workers} | {best:.1f} | {args.clips / best:.2f} | {args.clips / best / cores:.2f} | "
            f"{seconds / best:.0f} |"
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
