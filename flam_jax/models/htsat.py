"""HTS-AT (a Swin transformer over the folded log-mel image) with FLAM's frame head.

``HTSAT(cfg, rngs=...)(waveform, train=...)`` -> pre-projection frames (B, F, out_dim),
F = cfg.num_frames (32 per 10 s except base-12hz). Architecture per FLAM_SPEC §3:
patch embed -> Swin stages (windowed attention with relative position bias, shifted
windows masked with -100, PatchMerging) -> LayerNorm -> chunk-major regroup averaged
over frequency. Parameters are float32; activations use ``compute_dtype``.

State paths (training spelling, ``models.names``): ``frontend/bn0/{scale,bias}`` (Param)
and ``frontend/bn0/{mean,var}`` (BatchStat); ``patch_embed/proj/{kernel (p,p,1,C0), bias}``,
``patch_embed/norm``; per block ``layers/{s}/blocks/{b}/{norm1,norm2}``,
``…/attn/qkv/{kernel (C,3,H,d), bias (3,H,d)}``, ``…/attn/proj/{kernel (H,d,C), bias}``,
``…/attn/relative_position_bias_table (225,H)``, ``…/mlp/{fc1,fc2}``; per stage but the
last ``layers/{s}/downsample/norm`` and ``layers/{s}/downsample/reduction/kernel (4C,2C)``;
the final ``norm``. RNG state (SpecAugment, drop path) sits under ``frontend/rngs`` and
``…/drop_path/rngs``. The relative position index and the shift masks are recomputed
constants, not state.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flam_jax.audio.frontend import LogMelFrontend
from flam_jax.models.configs import HTSATConfig, remat_policy

LN_EPS = 1e-5
MASK_VALUE = -100.0  # the reference's shifted-window mask value (not -inf)


# ----------------------------------------------------------------------------- geometry


def window_geometry(grid: int, window: int, block_index: int) -> tuple[int, int]:
    """(window, shift) of a block: odd blocks shift by window//2; a grid <= window is one window."""
    if grid <= window:
        return grid, 0
    return window, (window // 2 if block_index % 2 else 0)


@functools.cache
def relative_position_index(window: int) -> np.ndarray:
    """(w*w, w*w) int: row-major index into the (2w-1)^2 bias table for query i, key j."""
    rows, cols = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()])  # (2, w*w), row-major tokens
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return delta[0] * (2 * window - 1) + delta[1]


def _partition(x: np.ndarray | jax.Array, window: int):
    """(B, G, G, C) -> (B, nW, w*w, C), windows and tokens both row-major."""
    b, g, _, c = x.shape
    n = g // window
    x = x.reshape(b, n, window, n, window, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, n * n, window * window, c)


def _unpartition(x: jax.Array, grid: int) -> jax.Array:
    """Inverse of ``_partition``: (B, nW, w*w, C) -> (B, G, G, C)."""
    b, _, tokens, c = x.shape
    window = math.isqrt(tokens)
    n = grid // window
    x = x.reshape(b, n, n, window, window, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, grid, grid, c)


@functools.cache
def shift_mask(grid: int, window: int, shift: int) -> np.ndarray:
    """(nW, w*w, w*w) float32: -100 between tokens of different regions of the rolled grid."""
    labels = np.zeros((1, grid, grid, 1), np.float32)
    bounds = (slice(0, grid - window), slice(grid - window, grid - shift), slice(grid - shift, grid))
    for i, rows in enumerate(bounds):
        for j, cols in enumerate(bounds):
            labels[:, rows, cols, :] = 3 * i + j
    regions = _partition(labels, window)[0, :, :, 0]  # (nW, w*w)
    differs = regions[:, None, :] != regions[:, :, None]
    return np.where(differs, MASK_VALUE, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- layers


def _dense_init():
    return nnx.initializers.truncated_normal(stddev=0.02)


def _layer_norm(dim: int, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(dim, epsilon=LN_EPS, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class WindowAttention(nnx.Module):
    """Multi-head self-attention inside w x w windows with a learned relative position bias."""

    def __init__(self, dim: int, heads: int, window: int, *, dtype, rngs: nnx.Rngs):
        self.heads, self.window, self.dtype = heads, window, dtype
        head_dim = dim // heads
        self.scale = head_dim**-0.5
        # Fused projection laid out (C, 3, heads, head_dim): q/k/v, then heads, h-major.
        self.qkv = nnx.LinearGeneral(
            dim, (3, heads, head_dim), kernel_init=_dense_init(), dtype=dtype, rngs=rngs
        )
        self.proj = nnx.LinearGeneral(
            (heads, head_dim), dim, axis=(-2, -1), kernel_init=_dense_init(), dtype=dtype, rngs=rngs
        )
        table = _dense_init()(rngs.params(), ((2 * window - 1) ** 2, heads), jnp.float32)
        self.relative_position_bias_table = nnx.Param(table)

    def __call__(self, windows: jax.Array, mask: np.ndarray | None) -> jax.Array:
        """windows: (B, nW, N, C); mask: (nW, N, N) additive or None."""
        qkv = self.qkv(windows)  # (B, nW, N, 3, H, d)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        # Logits, bias, mask and softmax in float32 even when activations are bf16.
        logits = jnp.einsum("bwqhd,bwkhd->bwhqk", q * self.scale, k, preferred_element_type=jnp.float32)
        index = relative_position_index(self.window)
        bias = self.relative_position_bias_table[...][index]  # (N, N, H)
        logits = logits + jnp.transpose(bias, (2, 0, 1))
        if mask is not None:
            logits = logits + jnp.asarray(mask)[None, :, None]
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bwhqk,bwkhd->bwqhd", probs, v)
        return self.proj(out)


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, dtype, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, hidden, kernel_init=_dense_init(), dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, kernel_init=_dense_init(), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class SwinBlock(nnx.Module):
    """Pre-norm Swin block: (shifted) window attention and an MLP, each with stochastic depth."""

    def __init__(
        self, cfg: HTSATConfig, dim: int, heads: int, grid: int, index: int, drop_path: float, *, dtype, rngs
    ):
        self.grid = grid
        self.window, self.shift = window_geometry(grid, cfg.window_size, index)
        self.norm1 = _layer_norm(dim, dtype, rngs)
        self.attn = WindowAttention(dim, heads, self.window, dtype=dtype, rngs=rngs)
        self.norm2 = _layer_norm(dim, dtype, rngs)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), dtype=dtype, rngs=rngs)
        # Per-sample stochastic depth: one mask value per example, scaled by 1/keep.
        self.drop_path = nnx.Dropout(drop_path, broadcast_dims=(1, 2), rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b, tokens, c = x.shape
        g, w, s = self.grid, self.window, self.shift
        h = self.norm1(x).reshape(b, g, g, c)
        if s:
            h = jnp.roll(h, (-s, -s), axis=(1, 2))
        mask = shift_mask(g, w, s) if s else None
        h = _unpartition(self.attn(_partition(h, w), mask), g)
        if s:
            h = jnp.roll(h, (s, s), axis=(1, 2))
        x = x + self.drop_path(h.reshape(b, tokens, c), deterministic=not train)
        return x + self.drop_path(self.mlp(self.norm2(x)), deterministic=not train)


class PatchMerging(nnx.Module):
    """2x2 neighbours -> channels in the order [(0,0), (1,0), (0,1), (1,1)] (row, col), LN, 4C->2C."""

    def __init__(self, dim: int, *, dtype, rngs: nnx.Rngs):
        self.norm = _layer_norm(4 * dim, dtype, rngs)
        self.reduction = nnx.Linear(
            4 * dim, 2 * dim, use_bias=False, kernel_init=_dense_init(), dtype=dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array, grid: int) -> jax.Array:
        b, _, c = x.shape
        x = x.reshape(b, grid, grid, c)
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.reshape(b, (grid // 2) ** 2, 4 * c)))


class SwinStage(nnx.Module):
    def __init__(self, cfg: HTSATConfig, stage: int, drop_paths: list[float], *, dtype, remat, rngs):
        dim = cfg.embed_dim * 2**stage
        self.grid = cfg.patch_grid // 2**stage
        self.remat_policy = remat_policy(remat)
        self.use_remat = remat != "none"
        self.blocks = nnx.List(
            [
                SwinBlock(cfg, dim, cfg.num_heads[stage], self.grid, i, p, dtype=dtype, rngs=rngs)
                for i, p in enumerate(drop_paths)
            ]
        )
        last = stage == cfg.num_stages - 1
        self.downsample = None if last else PatchMerging(dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for block in self.blocks:
            if self.use_remat:
                run = nnx.remat(lambda blk, h: blk(h, train), policy=self.remat_policy)
                x = run(block, x)
            else:
                x = block(x, train)
        if self.downsample is not None:
            x = self.downsample(x, self.grid)
        return x


class PatchEmbed(nnx.Module):
    def __init__(self, cfg: HTSATConfig, *, dtype, rngs: nnx.Rngs):
        p = cfg.patch_size
        self.proj = nnx.Conv(
            1, cfg.embed_dim, (p, p), strides=(p, p), padding="VALID", dtype=dtype, rngs=rngs
        )
        self.norm = _layer_norm(cfg.embed_dim, dtype, rngs)

    def __call__(self, image: jax.Array) -> jax.Array:
        x = self.proj(image)  # (B, G, G, C0), rows = H
        b, g, _, c = x.shape
        return self.norm(x.reshape(b, g * g, c))


# ----------------------------------------------------------------------------- model


class HTSAT(nnx.Module):
    """Waveform (B, N<=480000) -> pre-projection frames (B, cfg.num_frames, cfg.out_dim), float32.

    ``compute_dtype`` sets the activation dtype of the Swin tower (the front end and the
    final frames stay float32); ``remat`` is a key of ``REMAT_POLICIES``. Randomness
    (SpecAugment, stochastic depth) comes from the rngs' "dropout" stream.
    """

    def __init__(self, cfg: HTSATConfig, *, rngs: nnx.Rngs, compute_dtype="float32", remat: str = "none"):
        remat_policy(remat)  # a bad name fails here, before any stage is built
        self.cfg = cfg
        dtype = jnp.dtype(compute_dtype)
        self.compute_dtype = dtype
        self.frontend = LogMelFrontend(rngs=rngs)
        self.patch_embed = PatchEmbed(cfg, dtype=dtype, rngs=rngs)
        rates = np.linspace(0.0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        stages, start = [], 0
        for stage, depth in enumerate(cfg.depths):
            drops = rates[start : start + depth]
            start += depth
            stages.append(SwinStage(cfg, stage, drops, dtype=dtype, remat=remat, rngs=rngs))
        self.layers = nnx.List(stages)
        self.norm = _layer_norm(cfg.out_dim, dtype, rngs)

    def image(self, waveform: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
        """The (B, 256, 256, 1) float32 image after bn0 (and SpecAugment in training)."""
        return self.frontend(waveform, train=train, mask=mask)

    def encode_image(self, image: jax.Array, *, train: bool = False) -> jax.Array:
        """(B, 256, 256, 1) image -> (B, num_frames, out_dim) float32 frames."""
        x = self.patch_embed(image.astype(self.compute_dtype))
        for stage in self.layers:
            x = stage(x, train)
        x = self.norm(x).astype(jnp.float32)
        return frame_head(x, self.cfg)

    def __call__(self, waveform: jax.Array, *, train: bool = False, mask: jax.Array | None = None):
        """``mask`` (B,) bool, optional: padded examples excluded from bn0's batch statistics."""
        return self.encode_image(self.image(waveform, train=train, mask=mask), train=train)


def frame_head(tokens: jax.Array, cfg: HTSATConfig) -> jax.Array:
    """(B, G*G, C) final tokens -> (B, chunks*G, C): rows split (chunk, freq), freq averaged.

    Grid row r = chunk * (G / chunks) + f; frame index = chunk * G + column.
    """
    b, _, c = tokens.shape
    g, chunks = cfg.final_grid, cfg.time_chunks
    x = tokens.reshape(b, chunks, g // chunks, g, c).mean(axis=2)
    return x.reshape(b, chunks * g, c)
