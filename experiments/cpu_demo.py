"""CPU demo: a small HTS-AT and the pretrained all-MiniLM-L6-v2 text tower on the demo corpus.

Variants: "" (the demo, about 15 minutes on 2 cores) and "tiny" (a few steps for CI).
"""

from flam_jax.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "cpu_demo"
    c.model.audio_size = "demo"
    c.model.text_tower = "minilm-l6"
    c.model.context_length = 32
    c.data.sed_clips = 8
    c.data.texts_per_clip = 5
    c.data.global_batch = 8
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 50
    c.optim.clip_norm = 1.0
    c.train.steps = 600
    c.train.log_every = 10
    c.train.ckpt_every = 200
    if arg == "tiny":
        c.data.sed_clips = 2
        c.data.global_batch = 2
        c.train.steps = 3
        c.optim.warmup_steps = 1
    elif arg not in (None, ""):
        raise ValueError(f"unknown variant {arg!r} (use '' or 'tiny')")
    return c
