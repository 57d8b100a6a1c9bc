"""BERT-family text encoder in Flax NNX: RoBERTa and BERT conventions, any size (FLAM_SPEC §4).

Post-LN transformer layers with exact GELU; the pooled output is tanh(dense(first token)),
which is what FLAM's projection and per-text heads read. Parameter names follow the
roles (``query``, ``attention_out``, ``ffn_in`` ...) so that converters map Hugging Face
names onto them one to one (see ``flam_jax.export.from_hf``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flam_jax.models.configs import TextConfig, remat_policy

# Hugging Face BERT/RoBERTa initialisation, used when a tower is trained from scratch.
_normal = nnx.initializers.normal(0.02)


def _dense(n_in: int, n_out: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, dtype=dtype, kernel_init=_normal, rngs=rngs)


def _norm(cfg: TextConfig, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # Two-pass variance like PyTorch: the fast E[x²]-E[x]² form loses digits on parity.
    return nnx.LayerNorm(
        cfg.hidden, epsilon=cfg.layer_norm_eps, dtype=dtype, use_fast_variance=False, rngs=rngs
    )


def position_ids(ids: jax.Array, cfg: TextConfig) -> jax.Array:
    """RoBERTa: real tokens count up from pad_id + 1 and pads sit at pad_id; BERT: 0..L-1."""
    if cfg.style == "roberta":
        # Like the reference, "real" is decided by the ids, not by the attention mask.
        real = (ids != cfg.pad_id).astype(jnp.int32)
        return jnp.cumsum(real, axis=1) * real + cfg.pad_id
    return jnp.broadcast_to(jnp.arange(ids.shape[1], dtype=jnp.int32), ids.shape)


class TextLayer(nnx.Module):
    """One post-LN transformer layer: self-attention and a GELU feed-forward block."""

    def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
        self.heads = cfg.heads
        self.head_dim = cfg.head_dim
        self.query = _dense(cfg.hidden, cfg.hidden, dtype, rngs)
        self.key = _dense(cfg.hidden, cfg.hidden, dtype, rngs)
        self.value = _dense(cfg.hidden, cfg.hidden, dtype, rngs)
        self.attention_out = _dense(cfg.hidden, cfg.hidden, dtype, rngs)
        self.attention_norm = _norm(cfg, dtype, rngs)
        self.ffn_in = _dense(cfg.hidden, cfg.ffn, dtype, rngs)
        self.ffn_out = _dense(cfg.ffn, cfg.hidden, dtype, rngs)
        self.ffn_norm = _norm(cfg, dtype, rngs)
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)

    def _split_heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:2], self.heads, self.head_dim)

    def __call__(self, x: jax.Array, attention_bias: jax.Array, *, train: bool) -> jax.Array:
        q = self._split_heads(self.query(x))
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (self.head_dim**-0.5)
        # Softmax in fp32 whatever the compute dtype: bf16 logits saturate on long contexts.
        probs = jax.nn.softmax(scores.astype(jnp.float32) + attention_bias, axis=-1).astype(v.dtype)
        probs = self.dropout(probs, deterministic=not train)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(x.shape)
        attended = self.dropout(self.attention_out(context), deterministic=not train)
        x = self.attention_norm(x + attended)
        hidden = jax.nn.gelu(self.ffn_in(x), approximate=False)
        out = self.dropout(self.ffn_out(hidden), deterministic=not train)
        return self.ffn_norm(x + out)


class TextEncoder(nnx.Module):
    """Embeddings, ``cfg.layers`` post-LN layers and the tanh pooler.

    ``dtype`` is the compute dtype (parameters stay fp32); ``remat`` is a key of
    ``REMAT_POLICIES`` ("block" recomputes each layer in the backward pass).
    """

    def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs, compute_dtype="float32", remat: str = "none"):
        self.remat_policy = remat_policy(remat)
        self.cfg = cfg
        self.remat = remat
        dtype = jnp.dtype(compute_dtype)
        self.word_embeddings = nnx.Embed(
            cfg.vocab_size, cfg.hidden, dtype=dtype, embedding_init=_normal, rngs=rngs
        )
        self.position_embeddings = nnx.Embed(
            cfg.max_positions, cfg.hidden, dtype=dtype, embedding_init=_normal, rngs=rngs
        )
        self.token_type_embeddings = nnx.Embed(
            cfg.type_vocab, cfg.hidden, dtype=dtype, embedding_init=_normal, rngs=rngs
        )
        self.embeddings_norm = _norm(cfg, dtype, rngs)
        self.embeddings_dropout = nnx.Dropout(cfg.dropout, rngs=rngs)
        self.layers = nnx.List([TextLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.layers)])
        self.pooler = _dense(cfg.hidden, cfg.hidden, dtype, rngs)

    def encode(
        self,
        ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        train: bool = False,
    ) -> tuple[jax.Array, jax.Array]:
        """(last hidden states [N,L,hidden] in the compute dtype, pooled [N,hidden] float32)."""
        ids = jnp.asarray(ids, jnp.int32)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(ids)
        x = (
            self.word_embeddings(ids)
            + self.position_embeddings(position_ids(ids, self.cfg))
            + self.token_type_embeddings(token_type_ids)
        )
        x = self.embeddings_dropout(self.embeddings_norm(x), deterministic=not train)
        # Additive key mask, broadcast over heads and queries; finfo.min like the reference.
        keep = jnp.asarray(attention_mask).astype(bool)[:, None, None, :]
        attention_bias = jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)

        def run_layer(layer: TextLayer, x: jax.Array, bias: jax.Array) -> jax.Array:
            return layer(x, bias, train=train)

        if self.remat != "none":
            run_layer = nnx.remat(run_layer, policy=self.remat_policy)
        for layer in self.layers:
            x = run_layer(layer, x, attention_bias)
        pooled = jnp.tanh(self.pooler(x[:, 0]))
        return x, pooled.astype(jnp.float32)

    def __call__(
        self,
        ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        train: bool = False,
    ) -> jax.Array:
        """Pooled text feature [N, hidden]."""
        return self.encode(ids, attention_mask, token_type_ids, train=train)[1]
