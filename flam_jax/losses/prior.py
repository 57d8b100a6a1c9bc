"""Prior loss for the per-text bias β (FLAM_SPEC §6.3, paper Eq. 10).

β_j is pulled (binary cross-entropy with logits, soft target) towards r_j, the fraction
of positive frames of text j over the whole SED batch: its positives among the local
clips (the only clips with labels for it) divided by T times the number of valid clips
on all devices. β is not stopped here; this is the only loss that trains it.
"""

import jax
import jax.numpy as jnp

from flam_jax.errors import InputError


def positive_ratio(labels, audio_mask, *, num_blocks: int = 1) -> jax.Array:
    """r [D·Nt]: positive-frame ratio of each text over the global batch.

    ``labels`` is the global [D·Na, Nt, T] local-pair label array. Labels of padded clips
    are masked out (openflam relies on them being 0).
    """
    n_clips, nt, n_frames = labels.shape
    if num_blocks < 1 or n_clips % num_blocks or audio_mask.shape != (n_clips,):
        raise InputError(
            f"labels {labels.shape} and audio_mask {audio_mask.shape} do not split into {num_blocks} blocks"
        )
    masked = labels.astype(jnp.float32) * audio_mask[:, None, None]
    positives = masked.reshape(num_blocks, n_clips // num_blocks, nt, n_frames).sum(axis=(1, 3))
    valid_frames = n_frames * jnp.sum(audio_mask.astype(jnp.float32))
    return positives.reshape(num_blocks * nt) / jnp.maximum(valid_frames, 1.0)


def prior_loss(
    beta,
    labels,
    audio_mask,
    text_mask,
    *,
    num_blocks: int = 1,
    reference_normalizer: bool = False,
) -> jax.Array:
    """Mean BCE(β_j, r_j) over valid texts (global arrays, ``num_blocks`` device blocks).

    Default: the mean over all valid texts of the global batch. ``reference_normalizer``:
    openflam's mean over each device's valid texts, averaged over devices.
    """
    ratio = jax.lax.stop_gradient(positive_ratio(labels, audio_mask, num_blocks=num_blocks))
    if beta.shape != ratio.shape or text_mask.shape != ratio.shape:
        raise InputError(f"beta {beta.shape} and text_mask {text_mask.shape} must be {ratio.shape}")
    beta = beta.astype(jnp.float32)
    # BCE with logits: r·softplus(−β) + (1 − r)·softplus(β).
    bce = ratio * jax.nn.softplus(-beta) + (1.0 - ratio) * jax.nn.softplus(beta)
    mask = text_mask.astype(jnp.float32)
    if reference_normalizer:
        sums = (bce * mask).reshape(num_blocks, -1).sum(axis=1)
        counts = mask.reshape(num_blocks, -1).sum(axis=1)
        return jnp.mean(jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0))
    return jnp.sum(bce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
