"""Training-step throughput: examples/s of the jitted, sharded step (and MFU on a GPU).

    python benchmarks/train_step.py                          # cpu_demo on this machine
    python benchmarks/train_step.py --config=experiments/flam_paper.py \
        --set data.sed_clips=16 --set data.global_batch=16 --set mesh.fsdp=1   # one GPU

Times only the step: batches are synthetic arrays of the pipeline's layout, built once
and reused, so the input pipeline (see data_throughput.py) is not part of the figure.
FLOPs per step come from XLA's cost analysis of the compiled step; MFU divides the
achieved FLOP rate by the device's peak (bf16 dense), when the device is known.
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flam_jax.config import apply_assignments, load_experiment, validate  # noqa: E402
from flam_jax.train.objective import sed_groups  # noqa: E402
from flam_jax.train.trainer import Trainer  # noqa: E402

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def synthetic_batch(config, mesh, vocab: int = 1000) -> dict:
    rng = np.random.default_rng(0)
    length = config.model.context_length

    def tokens(n):
        ids = rng.integers(5, vocab, size=(n, length)).astype(np.int32)
        mask = np.ones((n, length), np.int32)
        mask[:, length // 2 :] = 0
        return ids, mask

    na, b = config.data.sed_clips, config.data.global_batch
    groups = sed_groups(config, mesh)
    nt_g = config.data.texts_per_clip * na // groups
    s_ids, s_mask = tokens(nt_g * groups)
    g_ids, g_mask = tokens(b)
    return {
        "sed": {
            "audio": (0.1 * rng.standard_normal((na, 480_000))).astype(np.float32),
            "audio_mask": np.ones(na, bool),
            "text_tokens": s_ids,
            "text_attention": s_mask,
            "text_mask": np.ones(nt_g * groups, bool),
            "caption_ids": np.arange(1, nt_g * groups + 1, dtype=np.int32),
            "labels": (rng.random((na, nt_g, 32)) < 0.2).astype(np.uint8),
        },
        "global": {
            "audio": (0.1 * rng.standard_normal((b, 480_000))).astype(np.float32),
            "text_tokens": g_ids,
            "text_attention": g_mask,
            "caption_ids": np.arange(1, b + 1, dtype=np.int32),
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=os.path.join(ROOT, "experiments/cpu_demo.py"))
    parser.add_argument("--set", action="append", default=[], help="key=value override")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    config = load_experiment(args.config)
    config.model.text_weights = ""  # random weights time the same
    apply_assignments(config, args.set)
    validate(config)

    holder = {}
    trainer = Trainer(config, "/unused", data_factory=lambda c, m: holder.setdefault("it", iter(())))
    host = synthetic_batch(config, trainer.mesh)
    trainer.data = iter(lambda: host, None)
    state = trainer.init_state()
    batch = trainer.next_batch()
    step = trainer.step_fn(batch)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    with jax.set_mesh(trainer.mesh):
        state, metrics = step(state, batch)  # warm-up
        jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - t0) / args.steps
    examples = trainer.examples_per_step
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in kind), None)
    mfu = f"{100 * flops / seconds / (peak * jax.device_count()):.1f}%" if peak and flops else "n/a"
    print(f"device: {kind} x{jax.device_count()}  config: {args.config} {' '.join(args.set)}")
    print(
        f"| train step | {config.model.audio_size} + {config.model.text_tower}, SED {config.data.sed_clips}"
        f" + global {config.data.global_batch}, {config.model.compute_dtype} | {seconds:.2f} s/step"
        f" | {examples / seconds:.2f} examples/s | compile {compile_s:.0f} s"
        f" | {flops / 1e12:.2f} TFLOP/step | MFU {mfu} | loss {float(metrics['loss']):.3f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
