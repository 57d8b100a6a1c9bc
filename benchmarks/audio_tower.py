"""Audio tower speed on this machine: our JAX front end and HTS-AT vs openflam's (PyTorch).

Rows: the log-mel front end alone (batch 8, 10 s), a demo-size training step (forward +
backward, train=True, batch 8) and the base-size forward pass, ours (jit, fp32) next to
openflam's audio branch (torch, 2 threads, random weights) at batch 1 and 8. Prints wall
and process-CPU seconds per call (the machine may be shared: CPU time is the steadier one).

    .venv/bin/python benchmarks/audio_tower.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from flam_jax.audio import frontend as fe
from flam_jax.export import openflam_audio
from flam_jax.models.configs import HTSAT_CONFIGS
from flam_jax.models.htsat import HTSAT


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, cpu) seconds per call after one warm-up call."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return float(np.median(walls)), float(np.median(cpus))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    waves = np.random.RandomState(0).uniform(-0.5, 0.5, (8, fe.MAX_SAMPLES)).astype(np.float32)
    waves8 = jnp.asarray(waves)

    image_fn = jax.jit(lambda w: fe.fold_to_image(fe.stretch_time(fe.log_mel(w))))
    rows.append(("front end, batch 8", *timed(lambda: image_fn(waves8).block_until_ready(), args.repeats)))

    demo = HTSAT(HTSAT_CONFIGS["demo"], rngs=nnx.Rngs(0))

    @nnx.jit
    def train_step(model, w):
        return nnx.value_and_grad(lambda m: (m(w, train=True) ** 2).mean())(model)

    rows.append(
        (
            "demo fwd+bwd train, batch 8",
            *timed(lambda: jax.block_until_ready(train_step(demo, waves8)), args.repeats),
        )
    )

    from openflam.module.htsat import create_htsat_model
    from openflam.module.model import CLAPAudioCfg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = create_htsat_model(CLAPAudioCfg(model_name="base")).eval()
    state = {"audio_branch." + k: v.numpy() for k, v in ref.state_dict().items()}
    ours = openflam_audio.htsat_from_openflam(state)
    forward = nnx.jit(lambda m, w: m(w))
    for batch in (1, 8):
        w_np = waves[:batch]
        w_jax = jnp.asarray(w_np)
        wall, cpu = timed(lambda w=w_jax: forward(ours, w).block_until_ready(), args.repeats)
        with torch.no_grad():
            ref_wall, ref_cpu = timed(lambda w=w_np: ref({"waveform": torch.from_numpy(w)}), args.repeats)
        rows.append((f"base forward, batch {batch}: ours", wall, cpu))
        rows.append((f"base forward, batch {batch}: openflam", ref_wall, ref_cpu))
        rows.append(("  speed-up (openflam time / ours)", ref_wall / wall, ref_cpu / cpu))

    print(f"load average {os.getloadavg()[0]:.1f}; jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"| {'row':<40} | wall s | cpu s |")
    for name, wall, cpu in rows:
        print(f"| {name:<40} | {wall:6.3f} | {cpu:6.3f} |")


if __name__ == "__main__":
    main()
