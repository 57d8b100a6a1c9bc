"""Audio tower speed on this machine: our JAX front end and HTS-AT vs openflam's (PyTorch).

Rows: the log-mel front end alone (batch 8, 10 s), a demo-size training step (forward +
backward, train=True, batch 8) and the base-size forward pass, ours (jit, fp32) next to
openflam's audio branch (torch, random weights, ours converted from them) at batch 1 and 8.

Timing (benchmarks/timing.py): one warm-up call per side (compilation for JAX, first call
for torch), then interleaved rounds (openflam, flam_jax, openflam, ...); minimum, median
and maximum wall seconds per call and the minimum process-CPU seconds, ratio of the
minima, load average before and after. The two JAX-only rows are timed the same way with
one side. Both sides get the same thread count (--threads, default every CPU this process
may use).

    .venv/bin/python benchmarks/audio_tower.py [--repeats 7] [--batches 1,8] [--threads N]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds per row (default 7)")
    parser.add_argument(
        "--batches", default="1,8", help="batch sizes of the base forward rows, comma-separated (default 1,8)"
    )
    parser.add_argument("--threads", type=int, default=None, help="threads per side (default: all CPUs)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write every figure here")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    load_start = os.getloadavg()
    started = time.perf_counter()
    cpus = timing.pin_threads(args.threads)

    import torch

    timing.set_torch_threads(torch, cpus)
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from openflam.module.htsat import create_htsat_model
    from openflam.module.model import CLAPAudioCfg

    from flam_jax.audio import frontend as fe
    from flam_jax.export import openflam_audio
    from flam_jax.models.configs import HTSAT_CONFIGS
    from flam_jax.models.htsat import HTSAT

    waves = np.random.RandomState(0).uniform(-0.5, 0.5, (max(8, *batches), fe.MAX_SAMPLES))
    waves = waves.astype(np.float32)
    waves8 = jnp.asarray(waves[:8])
    rows = []

    def run(name: str, fns: dict, batch: int) -> None:
        stats = timing.interleaved(fns, args.repeats)
        rows.append({"row": name, "batch": batch, **stats})
        line = f"{name}: {args.repeats} rounds in {stats['seconds']:.1f} s"
        if len(fns) == 2:
            line += f", ratio of minima {timing.ratio_of_minima(stats, 'openflam', 'flam_jax'):.2f}x"
        print(line, flush=True)

    image_fn = jax.jit(lambda w: fe.fold_to_image(fe.stretch_time(fe.log_mel(w))))
    run(
        "front end (STFT → mel → dB → stretch → fold), batch 8",
        {"flam_jax": lambda: image_fn(waves8).block_until_ready()},
        8,
    )

    demo = HTSAT(HTSAT_CONFIGS["demo"], rngs=nnx.Rngs(0))

    @nnx.jit
    def train_step(model, w):
        return nnx.value_and_grad(lambda m: (m(w, train=True) ** 2).mean())(model)

    run(
        "demo HTS-AT forward + backward, train=True, batch 8",
        {"flam_jax": lambda: jax.block_until_ready(train_step(demo, waves8))},
        8,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = create_htsat_model(CLAPAudioCfg(model_name="base")).eval()
    state = {"audio_branch." + k: v.numpy() for k, v in ref.state_dict().items()}
    ours = openflam_audio.htsat_from_openflam(state)
    forward = nnx.jit(lambda m, w: m(w))
    for batch in batches:
        w_torch = torch.from_numpy(waves[:batch])
        w_jax = jnp.asarray(waves[:batch])

        def ref_forward(w=w_torch):
            with torch.inference_mode():
                ref({"waveform": w})

        run(
            f"HTS-AT base forward, batch {batch}",
            {"openflam": ref_forward, "flam_jax": lambda w=w_jax: forward(ours, w).block_until_ready()},
            batch,
        )

    load_end = os.getloadavg()
    info = timing.machine()
    threads = timing.thread_settings(cpus, torch)
    versions = timing.versions(jax, torch)

    table, results = [], []
    for r in rows:
        sides = r["sides"]
        ours_cell = timing.spread_cell(r, "flam_jax")
        ours_cpu = f"{sides['flam_jax']['cpu']['min']:.3f}"
        if "openflam" in sides:
            r["ratio_wall"] = timing.ratio_of_minima(r, "openflam", "flam_jax", "wall")
            r["ratio_cpu"] = timing.ratio_of_minima(r, "openflam", "flam_jax", "cpu")
            ref_cell = timing.spread_cell(r, "openflam")
            ref_cpu = f"{sides['openflam']['cpu']['min']:.3f}"
            ratios = (f"**{r['ratio_wall']:.2f}x**", f"{r['ratio_cpu']:.2f}x")
            results.append(
                f"base forward batch {r['batch']}: **{r['ratio_wall']:.2f}× openflam** "
                f"({sides['flam_jax']['wall']['min']:.2f} s vs {sides['openflam']['wall']['min']:.2f} s; "
                f"{r['ratio_cpu']:.2f}× in CPU time)"
            )
        else:
            ref_cell = ref_cpu = "—"
            ratios = ("—", "—")
            short = "front end" if r["row"].startswith("front end") else "demo train step"
            results.append(
                f"{short} {sides['flam_jax']['wall']['min']:.2f} s wall / "
                f"{sides['flam_jax']['cpu']['min']:.2f} CPU-s per batch of 8"
            )
        table.append(
            [
                r["row"],
                r["repeats"],
                ref_cell,
                ours_cell,
                ratios[0],
                f"{ref_cpu} / {ours_cpu}",
                ratios[1],
                f"{r['load_start'][0]:.1f} → {r['load_end'][0]:.1f}",
            ]
        )
    total_s = time.perf_counter() - started

    readme_row = (
        "| `audio_tower.py` | audio tower alone: JAX front end (batch 8, 10 s); demo HTS-AT fwd+bwd "
        f"(train, batch 8); HTS-AT base forward, ours (jit fp32, XLA {threads['xla_eigen_pool']} threads) "
        f"vs openflam's audio branch (torch, {threads['threads']} threads), batch {args.batches}; warm-up, "
        f"then {args.repeats} interleaved rounds, minimum per side | "
        f"{timing.machine_cell(info, list(load_start), list(load_end))} | "
        + "; ".join(results)
        + f" ({timing.today()}) |"
    )

    timing.print_context(
        info, threads, versions, (load_start, load_end), "fp32, random weights", f"{total_s:.0f} s"
    )
    header = [
        "row",
        "rounds",
        "openflam wall s (min / med / max)",
        "flam_jax wall s (min / med / max)",
        "ratio of minima",
        "CPU s min: openflam / flam_jax",
        "CPU ratio",
        "load (1 min) start → end",
    ]
    print(timing.markdown(header, table))
    print()
    print("README row:")
    print(readme_row)

    timing.write_json(
        args.json,
        {
            "script": "audio_tower.py",
            "date": timing.today(),
            "args": vars(args),
            "machine": info,
            "threads": threads,
            "versions": versions,
            "load_start": list(load_start),
            "load_end": list(load_end),
            "run_seconds": total_s,
            "rows": rows,
            "readme_row": readme_row,
        },
    )


if __name__ == "__main__":
    main()
