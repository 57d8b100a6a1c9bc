"""FLAM as in the paper (FLAM_SPEC §9): HTS-AT base + RoBERTa-base, all three losses.

SED batch 512 mixtures (5 texts per clip) plus a global batch of 512 pairs per step,
Adam lr 1e-4, 3200 warmup steps then cosine decay, 120k steps, loss weights 1/200/1,
bf16 compute with fp32 master parameters. The mesh fills a TPU pod: 'data' takes every
device not given to 'fsdp' (set mesh.fsdp to the number of chips a model copy may be
split over). Start from converted openflam parameters with
``--config.train.init_from=EXPORT_DIR`` (flam-convert-openflam), or from pretrained
towers with ``--config.model.text_weights=ROBERTA_DIR`` (and FLAM-Global's export).

Variants: "" (the paper), "ablation" (no per-text α/β: one learned scale and bias shared
by every text).
"""

from flam_jax.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "flam_paper"
    c.model.audio_size = "base"
    c.model.text_tower = "roberta-base"
    c.model.compute_dtype = "bfloat16"
    c.model.context_length = 77
    c.data.sed_clips = 512
    c.data.texts_per_clip = 5
    c.data.global_batch = 512
    # A v5e host (4 chips, 112 vCPUs) at 40 % MFU takes ~707 mixtures and ~707 pairs per
    # second (compile-only step bound, benchmarks/README.md "data_throughput"); one worker
    # makes 62-79 mixtures or 230-320 pairs per CPU-second with every clip decoded, so the
    # SED pipeline needs ~10 and the global one ~3 busy cores: 16 and 6 leave 1.5-2x room.
    c.data.workers = 16
    c.data.global_workers = 6
    c.loss.w_clip = 1.0
    c.loss.w_sed = 200.0
    c.loss.w_prior = 1.0
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 3200
    c.optim.decay = "cosine"
    c.optim.clip_norm = 1.0
    c.train.steps = 120_000
    c.train.log_every = 100
    c.train.eval_every = 2000
    c.train.ckpt_every = 2000
    c.train.ckpt_keep = 3
    c.train.ckpt_keep_every = 20_000
    c.mesh.data = -1
    c.mesh.fsdp = 4
    if arg == "ablation":
        c.name = "flam_paper_no_per_text"
        c.model.per_text_scale = False
        c.model.per_text_bias = False
    elif arg not in (None, ""):
        raise ValueError(f"unknown variant {arg!r} (use '' or 'ablation')")
    return c
