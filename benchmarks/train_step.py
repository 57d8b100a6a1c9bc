"""Training-step throughput: examples/s of the jitted, sharded step (and MFU on a GPU).

    python benchmarks/train_step.py                          # cpu_demo on this machine
    python benchmarks/train_step.py --config=experiments/flam_paper.py \
        --set data.sed_clips=16 --set data.global_batch=16 --set mesh.fsdp=1   # one GPU

Times only the step: batches are synthetic arrays of the pipeline's layout, built once
and reused, so the input pipeline (see data_throughput.py) is not part of the figure.
FLOPs per step come from XLA's cost analysis of the compiled step; MFU divides the
achieved FLOP rate by the device's peak (bf16 dense), when the device is known.
``measure`` is also the device check's step figure (gpu_sections.py).
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
from flam_jax.train.aot import compiled_flops  # noqa: E402
from flam_jax.train.objective import sed_groups  # noqa: E402
from flam_jax.train.trainer import Trainer  # noqa: E402

# Dense bf16 tensor-core peak per chip (vendor spec sheets): H100 SXM and H200 SXM 989
# TFLOP/s, A100 312. Keys are matched against jax's device_kind ("NVIDIA H200").
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_bf16_flops(device_kind: str) -> float | None:
    """The chip's dense bf16 peak FLOP/s, None where the chip is not in the table."""
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_kind), None)


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


def measure(config, *, steps: int = 5, warmup: int = 1) -> dict:
    """Compile the train step of ``config`` and time it on one synthetic batch.

    ``step_s`` is the fastest of ``steps`` calls after ``warmup`` untimed ones, each waited
    for alone. FLOPs and memory come from XLA's analyses of the compiled step (per device),
    ``peak_bytes`` from the device allocator (None where the platform keeps no statistics),
    MFU against ``peak_bf16_flops`` of the device (None when unknown).
    """
    trainer = Trainer(config, "/unused", data_factory=lambda c, m: iter(()))
    host = synthetic_batch(config, trainer.mesh)
    trainer.data = iter(lambda: host, None)
    state = trainer.init_state()
    batch = trainer.next_batch()
    times = []
    # Traced under the mesh, as the trainer's loop does: the same program as flam-train's.
    with jax.set_mesh(trainer.mesh):
        t0 = time.perf_counter()
        compiled = trainer.step_fn(batch).lower(state, batch).compile()
        compile_s = time.perf_counter() - t0
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    seconds = min(times)
    flops = compiled_flops(compiled) * jax.device_count()
    memory = compiled.memory_analysis()
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    peak = peak_bf16_flops(kind)
    stats = device.memory_stats() or {}
    return {
        "device_kind": kind,
        "devices": jax.device_count(),
        "sed_clips": config.data.sed_clips,
        "global_batch": config.data.global_batch,
        "examples_per_step": trainer.examples_per_step,
        "compute_dtype": config.model.compute_dtype,
        "step_s": seconds,
        "step_s_all": times,
        "examples_per_s": trainer.examples_per_step / seconds,
        "compile_s": compile_s,
        "flops_per_step": flops,
        "peak_bf16_flops_per_chip": peak,
        "mfu": flops / seconds / (peak * jax.device_count()) if peak and flops else None,
        "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        "argument_bytes": getattr(memory, "argument_size_in_bytes", None),
        "peak_bytes": stats.get("peak_bytes_in_use"),
        "loss": float(metrics["loss"]),
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
    row = measure(config, steps=args.steps)
    mfu = "n/a" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
    print(f"device: {row['device_kind']} x{row['devices']}  config: {args.config} {' '.join(args.set)}")
    print(
        f"| train step | {config.model.audio_size} + {config.model.text_tower}, SED {config.data.sed_clips}"
        f" + global {config.data.global_batch}, {config.model.compute_dtype} | {row['step_s']:.2f} s/step"
        f" | {row['examples_per_s']:.2f} examples/s | compile {row['compile_s']:.0f} s"
        f" | {row['flops_per_step'] / 1e12:.2f} TFLOP/step | MFU {mfu} | loss {row['loss']:.3f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
