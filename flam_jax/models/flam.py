"""FLAM: the two towers, their projections, the per-text scale/bias heads and the temperature.

FLAM_SPEC §1, §5, §7. Frames and the global vector share one audio projection; the
global embedding is normalize(P_a(mean of the pre-projection frames)), not the mean of
the projected frames. α = exp(MLP_α(h)) and β = MLP_β(h) read the pooled text feature h.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from flam_jax.errors import ConfigError, InputError
from flam_jax.models.configs import HTSAT_CONFIGS, TEXT_CONFIGS, HTSATConfig, TextConfig
from flam_jax.models.htsat import HTSAT
from flam_jax.models.text import TextEncoder

SCALE_INIT = 10.0  # α ≈ 10 at initialisation (last bias += ln 10)
BIAS_INIT = -8.0  # β ≈ −8 at initialisation
TEMPERATURE_INIT = 0.07  # logit_scale = ln(1/0.07)
NORM_EPS = 1e-12


def normalize(x: jax.Array) -> jax.Array:
    """x / max(‖x‖, 1e-12) along the last axis, like torch.nn.functional.normalize."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, NORM_EPS)


def _torch_linear(n_in: int, n_out: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """nn.Linear's default init: weight and bias ~ U(±1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(n_in)

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(
        n_in,
        n_out,
        dtype=dtype,
        kernel_init=nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_init=bias_init,
        rngs=rngs,
    )


class TwoLayerMLP(nnx.Module):
    """Linear – activation – Linear (openflam's ``nn.Sequential`` indices 0 and 2)."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, activation, *, dtype, rngs: nnx.Rngs):
        self.fc1 = _torch_linear(n_in, n_hidden, dtype, rngs)
        self.fc2 = _torch_linear(n_hidden, n_out, dtype, rngs)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.activation(self.fc1(x))).astype(jnp.float32)


def _head(width: int, last_bias_shift: float, dtype, rngs: nnx.Rngs) -> TwoLayerMLP:
    """Linear–GELU–Linear(→1) on the pooled feature, last bias shifted by the init value."""
    head = TwoLayerMLP(width, width, 1, _gelu, dtype=dtype, rngs=rngs)
    head.fc2.bias.set_value(head.fc2.bias.get_value() + last_bias_shift)
    return head


def _relu(x):
    return jax.nn.relu(x)


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


class FlamModel(nnx.Module):
    """``embed_audio`` / ``embed_text`` / ``frame_scores``; outputs are float32.

    With ``per_text_scale=False`` (``per_text_bias=False``) the head is replaced by one
    learned scalar shared by every text, initialised like the head (α = 10, β = −8): the
    paper's ablations, which keep a calibrated scale and prior but not per text. (Constants
    1 and 0 would bound the frame logits to cos ∈ [−1, 1], and such a model cannot fit a
    2 % prior at all.)
    """

    def __init__(
        self,
        audio_cfg: HTSATConfig,
        text_cfg: TextConfig,
        *,
        embed_dim: int = 512,
        per_text_scale: bool = True,
        per_text_bias: bool = True,
        compute_dtype="float32",
        remat: str = "none",
        rngs: nnx.Rngs,
    ):
        dtype = jnp.dtype(compute_dtype)
        self.audio = HTSAT(audio_cfg, rngs=rngs, compute_dtype=compute_dtype, remat=remat)
        self.text = TextEncoder(text_cfg, rngs=rngs, compute_dtype=compute_dtype, remat=remat)
        width = text_cfg.hidden
        self.audio_projection = TwoLayerMLP(
            audio_cfg.out_dim, embed_dim, embed_dim, _relu, dtype=dtype, rngs=rngs
        )
        self.text_projection = TwoLayerMLP(width, embed_dim, embed_dim, _relu, dtype=dtype, rngs=rngs)
        if per_text_scale:
            self.scale_head = _head(width, math.log(SCALE_INIT), dtype, rngs)
        else:
            self.shared_log_scale = nnx.Param(jnp.asarray(math.log(SCALE_INIT), jnp.float32))
        if per_text_bias:
            self.bias_head = _head(width, BIAS_INIT, dtype, rngs)
        else:
            self.shared_bias = nnx.Param(jnp.asarray(BIAS_INIT, jnp.float32))
        self.per_text_scale, self.per_text_bias = per_text_scale, per_text_bias
        self.logit_scale = nnx.Param(jnp.asarray(math.log(1.0 / TEMPERATURE_INIT), jnp.float32))

    def embed_audio(
        self, wave: jax.Array, *, train: bool = False, mask: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """(frames [B,F,D], global_ [B,D]), both unit norm. ``mask`` excludes padded clips
        from bn0's batch statistics in training."""
        features = self.audio(wave, train=train, mask=mask)  # [B, F, C] pre-projection
        frames = normalize(self.audio_projection(features))
        global_ = normalize(self.audio_projection(features.mean(axis=1)))
        return frames, global_

    def heads(self, pooled: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(α [N], β [N]) from pooled text features [N, hidden]."""
        n = pooled.shape[0]
        if self.per_text_scale:
            alpha = jnp.exp(self.scale_head(pooled)[:, 0])
        else:
            alpha = jnp.broadcast_to(jnp.exp(self.shared_log_scale[...]), (n,))
        if self.per_text_bias:
            beta = self.bias_head(pooled)[:, 0]
        else:
            beta = jnp.broadcast_to(self.shared_bias[...], (n,))
        return alpha.astype(jnp.float32), beta.astype(jnp.float32)

    def embed_text(
        self, ids: jax.Array, mask: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(emb [N,D] unit norm, α [N], β [N])."""
        pooled = self.text(ids, mask, train=train)
        alpha, beta = self.heads(pooled)
        return normalize(self.text_projection(pooled)), alpha, beta

    def frame_scores(
        self, frames: jax.Array, emb: jax.Array, alpha: jax.Array, beta: jax.Array, method: str = "unbiased"
    ) -> jax.Array:
        return frame_scores(frames, emb, alpha, beta, method)


def frame_scores(
    frames: jax.Array, emb: jax.Array, alpha: jax.Array, beta: jax.Array, method: str = "unbiased"
) -> jax.Array:
    """[B,N,F] scores of every text against every frame (FLAM_SPEC §7).

    "unbiased": s = σ(z) / (σ(z) + σ(β)) with z = α·cos + β, computed as
    σ(log σ(z) − log σ(β)), which is the same number without underflow at large |z|.
    "approximate": σ(α·cos), valid only when β ≪ 0.
    "cosine": (1 + cos) / 2, ignoring α and β: the frame scores of a model trained with the
    global loss alone (FLAM-Global), whose heads never learned (the paper's baseline).
    """
    cos = jnp.einsum("bfd,nd->bnf", frames, emb, precision=jax.lax.Precision.HIGHEST)
    if method == "cosine":
        return (1.0 + cos) / 2.0
    scaled = alpha[None, :, None] * cos
    if method == "approximate":
        return jax.nn.sigmoid(scaled)
    if method != "unbiased":
        raise InputError(
            f"frame_scores: method must be 'unbiased', 'approximate' or 'cosine', got {method!r}"
        )
    bias = beta[None, :, None]
    return jax.nn.sigmoid(jax.nn.log_sigmoid(scaled + bias) - jax.nn.log_sigmoid(bias))


def build_model(model_config, *, rngs: nnx.Rngs) -> FlamModel:
    """A ``FlamModel`` from ``config.model`` (audio_size, text_tower, embed_dim, per_text_scale,
    per_text_bias, compute_dtype, remat)."""
    if model_config.audio_size not in HTSAT_CONFIGS:
        raise ConfigError(
            f"model.audio_size {model_config.audio_size!r} is not one of {sorted(HTSAT_CONFIGS)}"
        )
    if model_config.text_tower not in TEXT_CONFIGS:
        raise ConfigError(
            f"model.text_tower {model_config.text_tower!r} is not one of {sorted(TEXT_CONFIGS)}"
        )
    remat = model_config.get("remat", "none")
    text_cfg = TEXT_CONFIGS[model_config.text_tower]
    context = model_config.get("context_length", text_cfg.context_length)
    if context != text_cfg.context_length:
        try:
            text_cfg = dataclasses.replace(text_cfg, context_length=context)
        except ConfigError as err:
            raise ConfigError(f"model.context_length {context}: {err}") from err
    return FlamModel(
        HTSAT_CONFIGS[model_config.audio_size],
        text_cfg,
        embed_dim=model_config.embed_dim,
        per_text_scale=model_config.per_text_scale,
        per_text_bias=model_config.per_text_bias,
        compute_dtype=model_config.compute_dtype,
        remat=remat,
        rngs=rngs,
    )
