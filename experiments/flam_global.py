"""FLAM-Global, the paper's baseline (FLAM_SPEC §9): the InfoNCE loss only.

HTS-AT base + RoBERTa-base, global batch 768, Adam lr 1e-4, 3200 warmup steps then
cosine decay, 50k steps, bf16 compute. No SED batch is read (w_sed = w_prior = 0).
Its export is the usual starting point of flam_paper (``train.init_from``).
"""

from flam_jax.config import base_config


def get_config(arg: str | None = None):
    if arg not in (None, ""):
        raise ValueError(f"unknown variant {arg!r} (flam_global has none)")
    c = base_config()
    c.name = "flam_global"
    c.model.audio_size = "base"
    c.model.text_tower = "roberta-base"
    c.model.compute_dtype = "bfloat16"
    c.data.global_batch = 768
    # The SED batch is not read; sed_clips stays a valid positive number for validation.
    c.data.workers = 8
    c.loss.w_clip = 1.0
    c.loss.w_sed = 0.0
    c.loss.w_prior = 0.0
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 3200
    c.optim.decay = "cosine"
    c.optim.clip_norm = 1.0
    c.train.steps = 50_000
    c.train.log_every = 100
    c.train.ckpt_every = 2000
    c.train.ckpt_keep_every = 10_000
    c.mesh.data = -1
    c.mesh.fsdp = 4
    return c
