"""Inference throughput: openflam 1.0.2 (PyTorch) vs flam_jax (jit) on the same v1-base weights.

Both models hold the same random v1-base weights (HTS-AT base + roberta-base; the released
checkpoint is not downloaded): openflam's FLAM is built offline, its state dict converted
with flam-convert-openflam and opened with FLAM.load. Audio: 10 s clips at batch 1 and 8
(frames + global for ours; frames for openflam, one tower pass each). Text: 77-token
texts at batch 1 and 8 (tokenisation included for both). fp32, CPU, torch on 2 threads.

    .venv/bin/python benchmarks/inference.py [--repeats 5] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "parity"))


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def best_times(fns, repeats: int) -> list[tuple[float, float]]:
    """(wall s, process CPU s) of the fastest of ``repeats`` calls of each function.

    One warm-up call each (compilation), then the functions are interleaved (a, b, a, b,
    ...) so that both see the same machine load: the CPU is shared with other work, and
    the fastest call is the least disturbed one. CPU seconds count every thread.
    """
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, log in zip(fns, times, strict=True):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            log.append((time.perf_counter() - wall, time.process_time() - cpu))
    return [min(log) for log in times]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    import torch

    torch.set_num_threads(2)
    from openflam_oracle import build_openflam, write_bpe_files

    from flam_jax.export.from_openflam import convert
    from flam_jax.infer.api import FLAM

    work = tempfile.mkdtemp(prefix="flam_bench_")
    tokenizer_dir = write_bpe_files(os.path.join(work, "tokenizer"))
    ref = build_openflam("base", 12, tokenizer_dir)
    pth = os.path.join(work, "v1-base-random.pth")
    torch.save(ref.model.state_dict(), pth)
    ours = FLAM.load(convert(pth, os.path.join(work, "export"), tokenizer_dir))

    rng = np.random.default_rng(0)
    # Long enough that both tokenizers truncate to exactly 77 tokens.
    text = " ".join(["a dog barks while rain falls on a tin roof and a car passes"] * 8)
    rows = []
    for batch in batches:
        wave = (0.1 * rng.standard_normal((batch, 480000))).astype(np.float32)
        wave_t = torch.from_numpy(wave)
        ids, _ = ours.tokenizer.encode([text])
        assert int((ids != ours.tokenizer.pad_id).sum()) == 77
        texts = [text] * batch

        def ref_audio(wave_t=wave_t):
            with torch.inference_mode():
                ref.get_local_audio_features(wave_t)

        def ref_text(texts=texts):
            with torch.inference_mode():
                ref.get_text_features(texts)

        t_ref_audio, t_ours_audio = best_times(
            [ref_audio, lambda wave=wave: ours.embed_audio(wave)], args.repeats
        )
        t_ref_text, t_ours_text = best_times(
            [ref_text, lambda texts=texts: ours.embed_text(texts)], 2 * args.repeats
        )
        rows.append(("clips", batch, t_ref_audio, t_ours_audio))
        rows.append(("texts", batch, t_ref_text, t_ours_text))

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; torch threads {torch.get_num_threads()}")
    import jax

    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}, fp32")
    print("| per s | batch | openflam | flam_jax | ratio | per CPU-s: openflam | flam_jax | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for what, batch, (ref_wall, ref_cpu), (our_wall, our_cpu) in rows:
        wall = f"{batch / ref_wall:.2f} | {batch / our_wall:.2f} | {ref_wall / our_wall:.2f}x"
        cpu = f"{batch / ref_cpu:.2f} | {batch / our_cpu:.2f} | {ref_cpu / our_cpu:.2f}x"
        print(f"| {what} | {batch} | {wall} | {cpu} |")


if __name__ == "__main__":
    main()
