"""The training objective: two forward passes per step and FLAM's weighted losses.

``objective(model, batch) -> (loss, metrics)`` on global (sharded) arrays:
- the global batch (audio–caption pairs) through ``embed_audio``/``embed_text`` gives
  the InfoNCE term;
- the SED batch (mixtures, texts, frame labels) gives the frame-wise and prior terms;
combined by ``losses.total.flam_loss`` (weights from ``config.loss``).

The SED batch is made of G self-contained blocks (``data.sed_groups``). With one block
per device the frame-wise loss runs as the ``shard_map`` ring; otherwise (one device, or
a fixed G other than the device count) the dense form over the same G blocks is used,
which gives the same number.
"""

import jax.numpy as jnp
from jax.sharding import Mesh

from flam_jax.errors import ConfigError
from flam_jax.losses.contrastive import clip_loss, temperature
from flam_jax.losses.framewise import SedBatch
from flam_jax.losses.total import LossSettings, flam_loss
from flam_jax.train.data import uses_global, uses_sed
from flam_jax.train.sharding import BATCH_AXES, batch_shards, sed_groups


def make_objective(config, mesh: Mesh):
    """Build ``objective(model, batch)`` for this config and mesh."""
    settings = LossSettings.from_config(config.loss)
    with_global, with_sed = uses_global(config), uses_sed(config)
    # A global-only run (FLAM-Global) reads no SED batch: its size need not split.
    groups = sed_groups(config, mesh) if with_sed else 1
    ring = groups == batch_shards(mesh) and groups > 1
    if config.data.global_batch % batch_shards(mesh):
        raise ConfigError(
            f"data.global_batch={config.data.global_batch} must split over the {batch_shards(mesh)} devices"
        )
    if with_global and not with_sed and settings.global_loss != "softmax":
        raise ConfigError("a global-only run (w_sed = w_prior = 0) supports loss.global_loss='softmax' only")

    def objective(model, batch):
        logit_scale = model.logit_scale[...]
        audio_emb = text_emb = None
        if with_global:
            g = batch["global"]
            _, audio_emb = model.embed_audio(g["audio"], train=True)
            text_emb, _, _ = model.embed_text(g["text_tokens"], g["text_attention"], train=True)
            audio_emb, text_emb = audio_emb.astype(jnp.float32), text_emb.astype(jnp.float32)
        if not with_sed:  # FLAM-Global: InfoNCE only
            loss = settings.w_clip * clip_loss(
                audio_emb, text_emb, logit_scale, max_scale=settings.logit_scale_max
            )
            return loss, {"clip_loss": loss / settings.w_clip, "logit_scale": temperature(logit_scale)}
        s = batch["sed"]
        frames, _ = model.embed_audio(s["audio"], train=True)
        sed_text, alpha, beta = model.embed_text(s["text_tokens"], s["text_attention"], train=True)
        sed = SedBatch(
            frames.astype(jnp.float32),
            s["audio_mask"],
            sed_text.astype(jnp.float32),
            alpha.astype(jnp.float32),
            beta.astype(jnp.float32),
            s["text_mask"],
            s["caption_ids"],
            s["labels"],
        )
        loss, metrics = flam_loss(
            sed,
            logit_scale,
            audio_emb,
            text_emb,
            settings=settings,
            mesh=mesh if ring else None,
            batch_axes=BATCH_AXES,
            num_blocks=groups,
        )
        metrics = dict(metrics)
        metrics.pop("loss", None)  # the trainer reports the total itself
        return loss, metrics

    return objective
