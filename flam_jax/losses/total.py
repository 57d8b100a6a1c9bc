"""FLAM's objective (FLAM_SPEC §6.4): L = w_clip·L_clip + w_sed·L_sed + w_prior·L_prior.

``flam_loss`` takes the SED batch (global, block-concatenated arrays, see
``framewise.SedBatch``) and the global batch's embeddings and returns the loss and a
dict of scalar metrics. With a ``mesh`` it uses the ``shard_map`` ring and the explicit
InfoNCE gather; without one it uses the dense reference (tests, one device).
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from flam_jax.errors import ConfigError
from flam_jax.losses._compat import axes_size, axes_tuple
from flam_jax.losses.contrastive import clip_loss, clip_loss_sharded, sigmoid_loss, temperature
from flam_jax.losses.framewise import SedBatch, framewise_loss_dense, framewise_loss_ring
from flam_jax.losses.prior import prior_loss


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The ``config.loss`` section as plain values (defaults = the paper's)."""

    w_clip: float = 1.0
    w_sed: float = 200.0
    w_prior: float = 1.0
    reference_normalizer: bool = False
    global_loss: str = "softmax"  # "softmax" (InfoNCE) or "sigmoid" (SigLIP-style)
    logit_scale_max: float = 0.0  # clamp of τ = exp(logit_scale); 0 = none
    sigmoid_bias: float = -10.0  # bias of the sigmoid global loss when none is passed
    framewise_scale: float = 1.0
    framewise_bias: float = 0.0

    @classmethod
    def from_config(cls, loss_config) -> "LossSettings":
        settings = cls(**{f.name: loss_config[f.name] for f in dataclasses.fields(cls)})
        if settings.global_loss not in ("softmax", "sigmoid"):
            raise ConfigError(f"loss.global_loss must be softmax or sigmoid, got {settings.global_loss!r}")
        return settings


def _sed_metrics(sed: SedBatch, num_blocks: int, scale, bias) -> dict[str, jax.Array]:
    """Statistics over the labelled (own-block) valid pairs, block-batched, no D² tensor."""
    n_clips, n_frames, dims = sed.frames.shape
    nt = sed.labels.shape[1]
    frames = sed.frames.reshape(num_blocks, n_clips // num_blocks, n_frames, dims)
    texts = sed.text_emb.reshape(num_blocks, nt, dims)
    cos = jnp.einsum("bitd,bjd->bijt", frames, texts, preferred_element_type=jnp.float32)
    alpha = sed.alpha.reshape(num_blocks, 1, nt, 1).astype(jnp.float32)
    beta = sed.beta.reshape(num_blocks, 1, nt, 1).astype(jnp.float32)
    biased = jax.nn.sigmoid(scale * alpha * cos + bias + beta)
    unbiased = biased / (biased + jax.nn.sigmoid(beta))  # FLAM_SPEC §7
    labels = sed.labels.reshape(num_blocks, n_clips // num_blocks, nt, n_frames).astype(jnp.float32)
    pairs = sed.audio_mask.reshape(num_blocks, -1, 1) & sed.text_mask.reshape(num_blocks, 1, nt)
    weight = jnp.broadcast_to(pairs[..., None], labels.shape).astype(jnp.float32)
    triples = jnp.maximum(jnp.sum(weight), 1.0)
    correct = ((unbiased > 0.5) == (labels > 0.5)).astype(jnp.float32)
    text_mask = sed.text_mask.astype(jnp.float32)
    texts_valid = jnp.maximum(jnp.sum(text_mask), 1.0)
    return {
        "positive_ratio": jnp.sum(labels * weight) / triples,
        "frame_accuracy": jnp.sum(correct * weight) / triples,
        "alpha_mean": jnp.sum(sed.alpha * text_mask) / texts_valid,
        "beta_mean": jnp.sum(sed.beta * text_mask) / texts_valid,
    }


def flam_loss(
    sed: SedBatch,
    logit_scale,
    audio_emb=None,
    text_emb=None,
    *,
    settings: LossSettings = LossSettings(),
    mesh: Mesh | None = None,
    batch_axes: str | tuple[str, ...] = ("data",),
    num_blocks: int | None = None,
    global_bias=None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, metrics). ``audio_emb``/``text_emb`` [B, E] may be None (no global batch).

    ``num_blocks`` is the number of self-contained SED groups the global arrays
    concatenate: default one per device along ``batch_axes`` of ``mesh`` (any multiple
    of the device count works), or 1 without a mesh.
    ``global_bias`` is the sigmoid global loss's bias (default ``settings.sigmoid_bias``).
    """
    s = settings
    if mesh is not None:
        axes = axes_tuple(batch_axes)
        num_blocks = num_blocks or axes_size(mesh, axes)
        sed_loss = framewise_loss_ring(
            sed,
            mesh=mesh,
            batch_axes=axes,
            num_blocks=num_blocks,
            scale=s.framewise_scale,
            bias=s.framewise_bias,
            reference_normalizer=s.reference_normalizer,
        )
    else:
        num_blocks = num_blocks or 1
        sed_loss = framewise_loss_dense(
            sed,
            num_blocks=num_blocks,
            scale=s.framewise_scale,
            bias=s.framewise_bias,
            reference_normalizer=s.reference_normalizer,
        )
    prior = prior_loss(
        sed.beta,
        sed.labels,
        sed.audio_mask,
        sed.text_mask,
        num_blocks=num_blocks,
        reference_normalizer=s.reference_normalizer,
    )
    if audio_emb is None or s.w_clip == 0:
        global_term = jnp.zeros((), jnp.float32)
    elif s.global_loss == "sigmoid":
        bias = s.sigmoid_bias if global_bias is None else global_bias
        global_term = sigmoid_loss(audio_emb, text_emb, logit_scale, bias, max_scale=s.logit_scale_max)
    elif mesh is not None:
        global_term = clip_loss_sharded(
            audio_emb, text_emb, logit_scale, mesh=mesh, batch_axes=batch_axes, max_scale=s.logit_scale_max
        )
    else:
        global_term = clip_loss(audio_emb, text_emb, logit_scale, max_scale=s.logit_scale_max)
    loss = s.w_clip * global_term + s.w_sed * sed_loss + s.w_prior * prior
    metrics = {
        "loss": loss,
        "clip_loss": global_term,
        "sed_loss": sed_loss,
        "prior_loss": prior,
        "logit_scale": temperature(logit_scale, s.logit_scale_max),
        **_sed_metrics(sed, num_blocks, s.framewise_scale, s.framewise_bias),
    }
    return loss, {k: jax.lax.stop_gradient(v) for k, v in metrics.items()}
