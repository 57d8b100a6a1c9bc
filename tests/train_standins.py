"""Small stand-ins for the trainer tests: a tiny model with FlamModel's embedding API
and a tiny synthetic, checkpointable Grain data source in the pipeline's batch layout.
The objective is the real one (``train.objective`` over ``losses.total``).

Also a driver: ``python tests/train_standins.py WORKDIR [--devices N] [--steps S]
[--slow SECONDS] [--config.k=v ...] [--coordinator ... --num-processes N --process-id I]``
runs ``train_and_evaluate`` with these pieces in a fresh process (for kill / SIGTERM /
device-count / multi-process tests).
"""

import json
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

        def frame_scores(self, frames, emb, alpha, beta):
            from flam_jax.models.flam import frame_scores

            return frame_scores(frames, emb, alpha, beta, "unbiased")

    return TinyFlam(rngs)


def _host_batch(index: int, config, process_index: int, process_count: int, slow: float) -> dict:
    """Batch ``index`` of the global stream; this process's rows only."""
    if slow:
        time.sleep(slow)
    from flam_jax.data.batches import train_fields

    rng = np.random.default_rng([config.seed, index])
    fields = train_fields(
        config, sed_groups=config.data.sed_groups, text_length=TEXT_LEN, num_samples=SAMPLES, frames=FRAMES
    )
    fields = {"global": fields["global"], "sed": fields["sed"]}  # global drawn first, as always

    def fill(shape, dtype):
        """Values for any field of the layout, by dtype (0/1 frame labels as uint8)."""
        if dtype.kind == "f":
            return rng.standard_normal(shape).astype(dtype)
        if dtype.kind == "b":
            return rng.random(shape) < 0.9
        if dtype == np.uint8:
            return (rng.random(shape) < 0.3).astype(dtype)
        return rng.integers(1, 1000, size=shape).astype(dtype)

    # Token ids and their attention first (global, then SED), then every other field.
    batch = {}
    for part, arrays in fields.items():
        ids = rng.integers(1, VOCAB, size=arrays["text_tokens"][0]).astype(arrays["text_tokens"][1])
        shape, dtype = arrays["text_attention"]
        mask = (rng.random(shape) < 0.8).astype(dtype)
        mask[:, 0] = 1
        batch[part] = {"text_tokens": ids, "text_attention": mask}
    for part, arrays in fields.items():
        for name, (shape, dtype) in arrays.items():
            if name not in batch[part]:
                batch[part][name] = fill(shape, dtype)
    batch = {part: {name: batch[part][name] for name in arrays} for part, arrays in fields.items()}

    def rows(x):
        per = x.shape[0] // process_count
        return x[process_index * per : (process_index + 1) * per]

    return {part: {k: rows(v) for k, v in arrays.items()} for part, arrays in batch.items()}


class StandinBatches:
    """Batch ``position`` of the global stream, this process's rows: the same global batches
    for any process count. Checkpointed like the real iterators (bytes through Grain's
    Orbax handler) and placed by the step after a change of process count."""

    def __init__(self, config, slow: float = 0.0):
        import jax

        self.config, self.slow = config, slow
        self.layout = (jax.process_index(), jax.process_count())
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = _host_batch(self.position, self.config, *self.layout, self.slow)
        self.position += 1
        return batch

    def get_state(self) -> bytes:
        return json.dumps({"position": self.position}).encode()

    def set_state(self, state: bytes) -> None:
        self.position = json.loads(bytes(state))["position"]

    def restore_at_step(self, step: int, saved: list[bytes]) -> None:
        assert all(json.loads(bytes(s))["position"] == step for s in saved), saved
        self.position = step

    def start_prefetch(self) -> None:
        pass


def standin_data_factory(config, mesh, slow: float = 0.0):
    return StandinBatches(config, slow)


class StandinTokenizer:
    """Ids from a CRC of the text: the same in every process (``hash`` is salted per process)."""

    def encode(self, texts):
        import zlib

        crc = [zlib.crc32(t.encode()) for t in texts]
        ids = np.array([[1 + (c + 7 * k) % (VOCAB - 1) for k in range(TEXT_LEN)] for c in crc], np.int32)
        return ids, np.ones_like(ids)


def standin_mixtures(count: int = 6):
    """Fixed validation 'mixtures' of the stand-in's size (SAMPLES samples, FRAMES frames)."""
    from flam_jax.data.simulate import Mixture

    rng = np.random.default_rng(42)
    out = []
    for i in range(count):
        labels = (rng.random((2, FRAMES)) < 0.5).astype(np.uint8)
        labels[:, 0] = 1
        out.append(
            Mixture(
                audio=rng.standard_normal(SAMPLES).astype(np.float32),
                captions=[f"sound {i % 3}", f"sound {3 + i % 2}"],
                labels=labels,
                spans=[[(0, 1)], [(0, 1)]],
                sources=["a", "b"],
                background="noise",
            )
        )
    return out


def standin_eval_fn():
    from flam_jax.evals.hook import validation_hook

    return validation_hook(standin_mixtures(), StandinTokenizer(), batch_size=4)


def _driver(argv: list[str]) -> int:
    from flam_jax.cli import ArgumentParser  # imports no jax: XLA_FLAGS is set below

    parser = ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--coordinator", default="")
    parser.add_argument("--num-processes", type=int, default=0)
    parser.add_argument("--process-id", type=int, default=-1)
    parser.add_argument("--heartbeat-timeout-s", type=int, default=100)
    parser.add_argument("--eval", action="store_true", help="run the validation hook")
    args, rest = parser.parse_known_args(argv)
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    from flam_jax.train import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id, args.heartbeat_timeout_s)
    from flam_jax.train.workdir import check_shared

    check_shared(args.workdir)
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
        eval_fn=standin_eval_fn() if args.eval else None,
    )
    print(f"RESULT {result['status']} {result['step']}", flush=True)
    from flam_jax.cli.train import EXIT_CODES  # flam-train's exit statuses (Ctrl-C: 130)

    return EXIT_CODES[result["status"]]


if __name__ == "__main__":
    from flam_jax.cli import report_errors

    sys.exit(report_errors(_driver)(sys.argv[1:]))
