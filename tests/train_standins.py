"""Small stand-ins for the trainer tests: a tiny model with FlamModel's embedding API
and a tiny synthetic, checkpointable Grain data source in the pipeline's batch layout.
The objective is the real one (``train.objective`` over ``losses.total``).

Also a driver: ``python tests/train_standins.py WORKDIR [--devices N] [--steps S]
[--slow SECONDS] [--config.k=v ...] [--coordinator ... --num_processes N --process_id I]``
runs ``train_and_evaluate`` with these pieces in a fresh process (for kill / SIGTERM /
device-count / multi-process tests).
"""

import os
import sys
import time

import numpy as np

SAMPLES = 64  # waveform length of the stand-in (the real model takes 480000)
FRAMES = 4
VOCAB = 50
TEXT_LEN = 6


def tiny_config(**overrides):
    from flam_jax.config import base_config

    c = base_config()
    c.name = "standin"
    c.data.sed_clips = 8
    c.data.texts_per_clip = 2
    c.data.global_batch = 8
    c.data.sed_groups = 8
    c.optim.lr = 1e-2
    c.optim.warmup_steps = 2
    c.optim.clip_norm = 1.0
    c.train.steps = 6
    c.train.log_every = 1
    c.train.ckpt_every = 3
    c.mesh.shard_min_size = 64
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return c


def standin_model_factory(config, rngs):
    import jax.numpy as jnp
    from flax import nnx

    def normalize(x):
        return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

    class TinyFlam(nnx.Module):
        def __init__(self, rngs):
            width = 16
            self.bn0 = nnx.BatchNorm(SAMPLES // FRAMES, momentum=0.9, rngs=rngs)
            self.audio = nnx.Linear(SAMPLES // FRAMES, width, rngs=rngs)
            self.drop = nnx.Dropout(0.2, rngs=rngs)
            self.audio_projection = nnx.Linear(width, 8, rngs=rngs)
            self.token_embed = nnx.Embed(VOCAB, width, rngs=rngs)
            self.text_projection = nnx.Linear(width, 8, rngs=rngs)
            self.scale_head = nnx.Linear(width, 1, rngs=rngs)
            self.bias_head = nnx.Linear(width, 1, rngs=rngs)
            self.logit_scale = nnx.Param(jnp.log(1 / 0.07))

        def embed_audio(self, wave, *, train=False):
            x = wave.reshape(wave.shape[0], FRAMES, -1)
            x = self.bn0(x, use_running_average=not train)
            h = self.drop(nnx.gelu(self.audio(x)), deterministic=not train)
            frames = normalize(self.audio_projection(h))
            global_ = normalize(self.audio_projection(h.mean(axis=1)))
            return frames, global_

        def embed_text(self, ids, mask, *, train=False):
            h = (self.token_embed(ids) * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1)
            emb = normalize(self.text_projection(h))
            alpha = jnp.exp(self.scale_head(h)[:, 0] + jnp.log(10.0))
            beta = self.bias_head(h)[:, 0] - 8.0
            return emb, alpha, beta

    return TinyFlam(rngs)


def _host_batch(index: int, config, process_index: int, process_count: int, slow: float) -> dict:
    """Batch ``index`` of the global stream; this process's rows only."""
    if slow:
        time.sleep(slow)
    rng = np.random.default_rng([config.seed, index])
    na, b = config.data.sed_clips, config.data.global_batch
    groups = config.data.sed_groups
    nt_g = config.data.texts_per_clip * na // groups
    nt = nt_g * groups

    def tokens(n):
        ids = rng.integers(1, VOCAB, size=(n, TEXT_LEN)).astype(np.int32)
        mask = (rng.random((n, TEXT_LEN)) < 0.8).astype(np.int32)
        mask[:, 0] = 1
        return ids, mask

    g_ids, g_mask = tokens(b)
    s_ids, s_mask = tokens(nt)
    batch = {
        "global": {
            "audio": rng.standard_normal((b, SAMPLES)).astype(np.float32),
            "text_tokens": g_ids,
            "text_attention": g_mask,
            "caption_ids": rng.integers(1, 1000, size=b).astype(np.int32),
        },
        "sed": {
            "audio": rng.standard_normal((na, SAMPLES)).astype(np.float32),
            "audio_mask": rng.random(na) < 0.9,
            "text_tokens": s_ids,
            "text_attention": s_mask,
            "text_mask": rng.random(nt) < 0.9,
            "caption_ids": rng.integers(1, 1000, size=nt).astype(np.int32),
            "labels": (rng.random((na, nt_g, FRAMES)) < 0.3).astype(np.uint8),
        },
    }

    def rows(x):
        per = x.shape[0] // process_count
        return x[process_index * per : (process_index + 1) * per]

    return {part: {k: rows(v) for k, v in arrays.items()} for part, arrays in batch.items()}


def standin_data_factory(config, mesh, slow: float = 0.0):
    """A real Grain pipeline (so its iterator state goes through the checkpoint)."""
    import grain
    import jax

    pid, count = jax.process_index(), jax.process_count()
    dataset = grain.MapDataset.range(10**9).map(lambda i: _host_batch(int(i), config, pid, count, slow))
    # One reader thread: with ``slow`` the stream really runs at one batch per ``slow`` s.
    options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)
    return iter(dataset.to_iter_dataset(read_options=options))


def _driver(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--coordinator", default="")
    parser.add_argument("--num_processes", type=int, default=0)
    parser.add_argument("--process_id", type=int, default=-1)
    args, rest = parser.parse_known_args(argv)
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    from flam_jax.train import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    overrides = {}
    for item in rest:
        key, value = item.removeprefix("--config.").split("=", 1)
        overrides[key] = type(tiny_config()[key.split(".")[0]][key.split(".")[1]])(value)
    config = tiny_config(**overrides)

    from flam_jax.train.trainer import train_and_evaluate

    result = train_and_evaluate(
        config,
        args.workdir,
        model_factory=standin_model_factory,
        data_factory=lambda c, m: standin_data_factory(c, m, args.slow),
    )
    print(f"RESULT {result['status']} {result['step']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1:]))
