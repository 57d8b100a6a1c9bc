"""Inference throughput: openflam 1.0.2 (PyTorch) vs flam_jax (jit) on the same v1-base weights.

Both models hold the same random v1-base weights (HTS-AT base + roberta-base; the released
checkpoint is not downloaded): openflam's FLAM is built offline, its state dict converted
with flam-convert-openflam and opened with FLAM.load. Audio: 10 s clips at batch 1 and 8
(frames + global for ours; frames for openflam, one tower pass each). Text: 77-token
texts at batch 1 and 8 (tokenisation included for both). fp32, CPU.

Timing (benchmarks/timing.py): one warm-up call per side, then interleaved rounds
(openflam, flam_jax, openflam, ...); minimum, median and maximum per side, ratio of the
minima, load average before and after. Both sides get the same thread count (--threads,
default every CPU this process may use).

    .venv/bin/python benchmarks/inference.py [--repeats 7] [--text-repeats 14] [--batches 1,8]
        [--threads N] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import timing

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "parity"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds for audio (default 7)")
    parser.add_argument(
        "--text-repeats", type=int, default=None, help="interleaved rounds for texts (default 2 x --repeats)"
    )
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--threads", type=int, default=None, help="threads per side (default: all CPUs)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write every figure here")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    text_repeats = args.text_repeats or 2 * args.repeats

    load_start = os.getloadavg()
    started = time.perf_counter()
    cpus = timing.pin_threads(args.threads)

    import torch

    timing.set_torch_threads(torch, cpus)
    import jax
    from openflam_oracle import build_openflam, write_bpe_files

    from flam_jax.export.from_openflam import convert
    from flam_jax.infer.api import FLAM

    work = tempfile.mkdtemp(prefix="flam_bench_")
    tokenizer_dir = write_bpe_files(os.path.join(work, "tokenizer"))
    ref = build_openflam("base", 12, tokenizer_dir)
    pth = os.path.join(work, "v1-base-random.pth")
    torch.save(ref.model.state_dict(), pth)
    ours = FLAM.load(convert(pth, os.path.join(work, "export"), tokenizer_dir))
    build_s = time.perf_counter() - started

    rng = np.random.default_rng(0)
    # Long enough that both tokenizers truncate to exactly 77 tokens.
    text = " ".join(["a dog barks while rain falls on a tin roof and a car passes"] * 8)
    ids, _ = ours.tokenizer.encode([text])
    assert int((ids != ours.tokenizer.pad_id).sum()) == 77
    comparisons = []
    for batch in batches:
        wave = (0.1 * rng.standard_normal((batch, 480000))).astype(np.float32)
        wave_t = torch.from_numpy(wave)
        texts = [text] * batch

        def ref_audio(wave_t=wave_t):
            with torch.inference_mode():
                ref.get_local_audio_features(wave_t)

        def ref_text(texts=texts):
            with torch.inference_mode():
                ref.get_text_features(texts)

        for what, fns, repeats in (
            ("clips", {"openflam": ref_audio, "flam_jax": lambda w=wave: ours.embed_audio(w)}, args.repeats),
            ("texts", {"openflam": ref_text, "flam_jax": lambda t=texts: ours.embed_text(t)}, text_repeats),
        ):
            stats = timing.interleaved(fns, repeats)
            comparisons.append({"what": what, "batch": batch, **stats})
            print(
                f"{what}, batch {batch}: {repeats} rounds in {stats['seconds']:.1f} s, "
                f"ratio of minima {timing.ratio_of_minima(stats, 'openflam', 'flam_jax'):.2f}x",
                flush=True,
            )

    load_end = os.getloadavg()
    info = timing.machine()
    threads = timing.thread_settings(cpus, torch)
    versions = timing.versions(jax, torch)

    rows, results = [], []
    for c in comparisons:
        ref_min, our_min = (c["sides"][s]["wall"]["min"] for s in ("openflam", "flam_jax"))
        ref_cpu, our_cpu = (c["sides"][s]["cpu"]["min"] for s in ("openflam", "flam_jax"))
        wall_ratio = timing.ratio_of_minima(c, "openflam", "flam_jax", "wall")
        cpu_ratio = timing.ratio_of_minima(c, "openflam", "flam_jax", "cpu")
        c["ratio_wall"], c["ratio_cpu"] = wall_ratio, cpu_ratio
        rows.append(
            [
                c["what"],
                c["batch"],
                c["repeats"],
                timing.spread_cell(c, "openflam"),
                timing.spread_cell(c, "flam_jax"),
                f"**{wall_ratio:.2f}x**",
                f"{c['batch'] / ref_min:.2f} / {c['batch'] / our_min:.2f}",
                f"{ref_cpu:.3f} / {our_cpu:.3f}",
                f"{cpu_ratio:.2f}x",
                f"{c['load_start'][0]:.1f} → {c['load_end'][0]:.1f}",
            ]
        )
        results.append(
            f"{c['what']} batch {c['batch']}: **{wall_ratio:.2f}×** wall, {cpu_ratio:.2f}× CPU-s "
            f"({c['batch'] / ref_min:.2f} vs {c['batch'] / our_min:.2f} {c['what']}/s)"
        )
    total_s = time.perf_counter() - started

    readme_row = (
        "| `inference.py` | whole model, v1-base weights (random, same in both): openflam "
        f"{versions['openflam']} (torch {threads['threads']} threads) vs `FLAM.load` of the converted export "
        f"(jit, fp32, XLA {threads['xla_eigen_pool']} threads): 10 s clips → frames (+ global for ours), "
        f"77-token texts → embeddings, batch {args.batches}; warm-up, then {args.repeats} (texts "
        f"{text_repeats}) interleaved rounds, minimum per side | "
        f"{timing.machine_cell(info, list(load_start), list(load_end))} | "
        + "; ".join(results)
        + f" ({timing.today()}) |"
    )

    timing.print_context(
        info,
        threads,
        versions,
        (load_start, load_end),
        "fp32",
        f"{total_s:.0f} s (building both models {build_s:.0f} s)",
    )
    header = [
        "what",
        "batch",
        "rounds",
        "openflam s (min / med / max)",
        "flam_jax s (min / med / max)",
        "ratio of minima",
        "per s at min: openflam / flam_jax",
        "CPU s min: openflam / flam_jax",
        "CPU ratio",
        "load (1 min) start → end",
    ]
    print(timing.markdown(header, rows))
    print()
    print("README row:")
    print(readme_row)

    timing.write_json(
        args.json,
        {
            "script": "inference.py",
            "date": timing.today(),
            "args": vars(args),
            "machine": info,
            "threads": threads,
            "versions": versions,
            "load_start": list(load_start),
            "load_end": list(load_end),
            "run_seconds": total_s,
            "build_seconds": build_s,
            "comparisons": comparisons,
            "readme_row": readme_row,
        },
    )


if __name__ == "__main__":
    main()
