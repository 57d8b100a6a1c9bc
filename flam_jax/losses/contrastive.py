"""Global audio–caption losses (FLAM_SPEC §6.1): symmetric InfoNCE and a sigmoid variant.

Inputs are the global batch's unit-norm embeddings [B, E] and ``logit_scale`` = log τ
(learnable, init ln(1/0.07)). Written on global arrays, both are exact across devices
under ``jax.jit`` with batch-sharded inputs: XLA gathers the embeddings with gradient.
``clip_loss_sharded`` spells that gather out in ``shard_map`` (each device computes its
own rows of the B × B logits), for use where the trainer already works per device.
"""

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from flam_jax.errors import InputError
from flam_jax.losses._compat import axes_size, axes_tuple, shard_map


def temperature(logit_scale, max_scale: float = 0.0) -> jax.Array:
    """τ = exp(logit_scale), clamped at ``max_scale`` when it is positive (openflam: no clamp)."""
    scale = jnp.exp(jnp.asarray(logit_scale, jnp.float32))
    return jnp.minimum(scale, max_scale) if max_scale > 0 else scale


def _check_pairs(audio_emb, text_emb) -> None:
    if audio_emb.ndim != 2 or audio_emb.shape != text_emb.shape or audio_emb.shape[0] == 0:
        raise InputError(
            f"global batch embeddings must both be non-empty [B, E]; got {audio_emb.shape}, {text_emb.shape}"
        )


def _row_terms(logits, targets):
    """Σ over rows of −log softmax(logits)[row, target]."""
    picked = jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]
    return jnp.sum(jax.nn.logsumexp(logits, axis=1) - picked)


def clip_loss(audio_emb, text_emb, logit_scale, *, max_scale: float = 0.0) -> jax.Array:
    """½[CE(τ·A·Eᵀ, I) + CE(τ·E·Aᵀ, I)], row means (the whole batch on one array)."""
    _check_pairs(audio_emb, text_emb)
    logits = temperature(logit_scale, max_scale) * jnp.matmul(
        audio_emb, text_emb.T, preferred_element_type=jnp.float32
    )
    targets = jnp.arange(logits.shape[0])
    return (_row_terms(logits, targets) + _row_terms(logits.T, targets)) / (2 * logits.shape[0])


def clip_loss_sharded(
    audio_emb,
    text_emb,
    logit_scale,
    *,
    mesh: Mesh,
    batch_axes: str | tuple[str, ...] = ("data",),
    max_scale: float = 0.0,
) -> jax.Array:
    """``clip_loss`` with the gather explicit: all-gather (with gradient), local rows, psum."""
    _check_pairs(audio_emb, text_emb)
    axes = axes_tuple(batch_axes)
    num_devices = axes_size(mesh, axes)
    if audio_emb.shape[0] % num_devices:
        raise InputError(f"global batch of {audio_emb.shape[0]} does not split over {num_devices} devices")
    total = audio_emb.shape[0]

    def local(audio, text, scale):
        tau = temperature(scale, max_scale)
        all_audio = jax.lax.all_gather(audio, axes, tiled=True)
        all_text = jax.lax.all_gather(text, axes, tiled=True)
        targets = jax.lax.axis_index(axes) * audio.shape[0] + jnp.arange(audio.shape[0])
        a2t = tau * jnp.matmul(audio, all_text.T, preferred_element_type=jnp.float32)
        t2a = tau * jnp.matmul(text, all_audio.T, preferred_element_type=jnp.float32)
        terms = _row_terms(a2t, targets) + _row_terms(t2a, targets)
        return jax.lax.psum(terms, axes) / (2 * total)

    body = shard_map(local, mesh=mesh, in_specs=(P(axes), P(axes), P()), out_specs=P())
    return body(audio_emb, text_emb, jnp.asarray(logit_scale, jnp.float32))


def sigmoid_loss(audio_emb, text_emb, logit_scale, bias, *, max_scale: float = 0.0) -> jax.Array:
    """SigLIP-style: Σ_ij softplus(−y_ij·(τ·⟨a_i, e_j⟩ + b)) / B, y = +1 on the diagonal else −1."""
    _check_pairs(audio_emb, text_emb)
    logits = temperature(logit_scale, max_scale) * jnp.matmul(
        audio_emb, text_emb.T, preferred_element_type=jnp.float32
    ) + jnp.asarray(bias, jnp.float32)
    signs = 2.0 * jnp.eye(logits.shape[0], dtype=jnp.float32) - 1.0
    return jnp.sum(jax.nn.softplus(-signs * logits)) / logits.shape[0]
