"""Frame-wise loss memory: the shard_map ring versus the all-gathered dense loss.

Per device: 64 clips × 320 texts × 32 frames × 512 dims (FLAM's SED batch at Na = 64,
five captions per clip). For D = 2, 4, 8 fake CPU devices this compiles loss + gradient
(w.r.t. frames, text embeddings and α) for both versions and prints XLA's temporary
memory per device (``compiled.memory_analysis()``; on CPU one program runs per device,
so its numbers are per device) and the measured step time.

The dense baseline all-gathers every text block (with gradient) and scores the local
clips against all D·Nt texts at once, so its logit tensor is [Na, D·Nt, T] per device.

    .venv/bin/python benchmarks/loss_memory.py [--repeats 3]
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flam_jax.losses._compat import shard_map
from flam_jax.losses.framewise import SedBatch, frame_logits, framewise_loss_ring

CLIPS, TEXTS, FRAMES, DIMS = 64, 320, 32, 512
AXIS = "data"


def make_batch(num_devices: int, seed: int = 0) -> SedBatch:
    rng = np.random.default_rng(seed)

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    na, nt = num_devices * CLIPS, num_devices * TEXTS
    return SedBatch(
        frames=unit(rng.normal(size=(na, FRAMES, DIMS))),
        audio_mask=rng.random(na) > 0.05,
        text_emb=unit(rng.normal(size=(nt, DIMS))),
        alpha=rng.uniform(5, 15, nt).astype(np.float32),
        beta=rng.uniform(-10, -6, nt).astype(np.float32),
        text_mask=rng.random(nt) > 0.05,
        caption_ids=rng.integers(0, 10 * nt, nt).astype(np.int32),
        labels=(rng.random((na, TEXTS, FRAMES)) > 0.9).astype(np.float32),
    )


def gathered_local(batch: SedBatch, num_devices: int) -> jax.Array:
    """Dense baseline on one device: all-gather the texts, one [Na, D·Nt, T] block."""
    frames, audio_mask, text_emb, alpha, beta, text_mask, ids, labels = batch
    gather = lambda x: jax.lax.all_gather(x, AXIS, tiled=True)
    all_emb, all_alpha, all_beta, all_mask, all_ids = map(gather, (text_emb, alpha, beta, text_mask, ids))
    me = jax.lax.axis_index(AXIS)
    own = (jnp.arange(num_devices * TEXTS) // TEXTS) == me
    full_labels = jnp.where(own[None, :, None], jnp.tile(labels, (1, num_devices, 1)), 0.0)
    dup = jnp.any(text_mask[None, :] & (ids[None, :] == all_ids[:, None]), axis=1) & ~own
    pairs = (audio_mask[:, None] & (all_mask & ~dup)[None, :]).astype(jnp.float32)
    z = frame_logits(frames, all_emb, all_alpha, all_beta)
    total = jnp.sum(jax.nn.softplus(-(2 * full_labels - 1) * z) * pairs[:, :, None])
    total, count = jax.lax.psum(total, AXIS), jax.lax.psum(jnp.sum(pairs), AXIS)
    return total / (count * FRAMES)


def loss_fns(mesh: Mesh, num_devices: int):
    spec = SedBatch(*([P(AXIS)] * len(SedBatch._fields)))
    dense = shard_map(lambda b: gathered_local(b, num_devices), mesh=mesh, in_specs=(spec,), out_specs=P())
    ring = lambda b: framewise_loss_ring(b, mesh=mesh, batch_axes=AXIS)
    return {"dense (all-gather)": dense, "ring": ring}


def loss_and_grad(loss_fn):
    def step(batch: SedBatch):
        def of(frames, text_emb, alpha):
            return loss_fn(batch._replace(frames=frames, text_emb=text_emb, alpha=alpha))

        return jax.value_and_grad(of, argnums=(0, 1, 2))(batch.frames, batch.text_emb, batch.alpha)

    return jax.jit(step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", default="2,4,8")
    args = parser.parse_args()
    rows = []
    for num_devices in [int(d) for d in args.devices.split(",")]:
        mesh = Mesh(np.array(jax.devices()[:num_devices]), (AXIS,))
        batch = jax.device_put(make_batch(num_devices), NamedSharding(mesh, P(AXIS)))
        values = {}
        for name, loss_fn in loss_fns(mesh, num_devices).items():
            step = loss_and_grad(loss_fn)
            compiled = step.lower(batch).compile()
            temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
            jax.block_until_ready(compiled(batch))  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                values[name] = jax.block_until_ready(compiled(batch))[0]
                times.append(time.perf_counter() - start)
            rows.append((num_devices, name, temp_mib, float(np.median(times))))
            print(f"D={num_devices} {name:<18} temp/device {temp_mib:8.1f} MiB  step {rows[-1][3]:.3f} s")
        a, b = (float(v) for v in values.values())
        assert abs(a - b) <= 1e-5 * abs(a), f"dense {a} and ring {b} disagree"
    print("\n| D | version | XLA temp / device (MiB) | step (s) |\n|---|---|---|---|")
    for num_devices, name, temp_mib, seconds in rows:
        print(f"| {num_devices} | {name} | {temp_mib:.1f} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
