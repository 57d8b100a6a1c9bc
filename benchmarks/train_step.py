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
from flam_jax.data.batches import train_fields  # noqa: E402
from flam_jax.train.objective import sed_groups  # noqa: E402
from flam_jax.train.trainer import Trainer  # noqa: E402

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def synthetic_batch(config, mesh, vocab: int = 1000) -> dict:
    """Both batches of the pipeline's layout (data.batches.train_fields), every row real."""
    rng = np.random.default_rng(0)
    fields = train_fields(config, sed_groups=sed_groups(config, mesh))

    def fill(shape, dtype):
        """Values for any field of the layout, by dtype (0/1 frame labels as uint8)."""
        if dtype.kind == "f":
            return (0.1 * rng.standard_normal(shape)).astype(dtype)
        if dtype.kind == "b":
            return np.ones(shape, bool)
        if dtype == np.uint8:
            return (rng.random(shape) < 0.2).astype(dtype)
        return np.arange(1, np.prod(shape) + 1, dtype=dtype).reshape(shape)

    # Token ids and their attention first (SED, then global), then every other field.
    batch = {}
    for part, arrays in fields.items():
        (n, length), dtype = arrays["text_tokens"]
        ids = rng.integers(5, vocab, size=(n, length)).astype(dtype)
        mask = np.ones(*arrays["text_attention"])
        mask[:, length // 2 :] = 0
        batch[part] = {"text_tokens": ids, "text_attention": mask}
    for part, arrays in fields.items():
        for name, (shape, dtype) in arrays.items():
            if name not in batch[part]:
                batch[part][name] = fill(shape, dtype)
    return {part: {name: batch[part][name] for name in arrays} for part, arrays in fields.items()}


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
