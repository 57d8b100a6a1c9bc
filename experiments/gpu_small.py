"""The FLAM recipe on one GPU: HTS-AT base + RoBERTa-base, small batches, bf16.

SED batch 32 mixtures (5 texts each) + 32 global pairs per step, and gradient
accumulation of 4 so an optimiser update sees 4x that. Same losses, weights and
schedule shape as flam_paper, shortened to 30k batches with a 800-update warmup.
Variant "debug": a few hundred steps of the small HTS-AT ("tiny") for a smoke run.
"""

from flam_jax.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "gpu_small"
    c.model.audio_size = "base"
    c.model.text_tower = "roberta-base"
    c.model.compute_dtype = "bfloat16"
    c.data.sed_clips = 32
    c.data.texts_per_clip = 5
    c.data.global_batch = 32
    c.data.workers = 4
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 800
    c.optim.clip_norm = 1.0
    c.optim.grad_accum = 4
    c.train.steps = 30_000
    c.train.log_every = 50
    c.train.eval_every = 1000
    c.train.ckpt_every = 1000
    c.mesh.data = 1
    c.mesh.fsdp = 1
    if arg == "debug":
        c.model.audio_size = "tiny"
        c.optim.grad_accum = 1
        c.optim.warmup_steps = 50
        c.train.steps = 300
        c.train.eval_every = 0
        c.train.ckpt_every = 100
    elif arg not in (None, ""):
        raise ValueError(f"unknown variant {arg!r} (use '' or 'debug')")
    return c
