"""Frame-wise sigmoid loss with per-text scale and bias (FLAM_SPEC §6.2, paper Eq. 4).

z[i,j,t] = scale·α_j·⟨a_{i,t}, e_j⟩ + bias + sg(β_j),  ℓ = softplus(−y·z),  y = 2Y − 1.

Each device holds a block of clips and the texts made from them (labels cover only those
local pairs); a text of another device's block is a negative for every local clip unless
its caption id equals the id of a valid local text (then it is dropped, not scored).

- ``framewise_loss_dense``: the whole [D·Na, D·Nt, T] tensor at once; a test oracle.
- ``framewise_loss_ring``: the production loss. ``shard_map`` over the batch mesh axes;
  each device scores its own block, then text blocks travel one hop per step around the
  ring (``ppermute``) for D − 1 steps. A custom VJP sends the blocks around again in the
  backward pass, so neither pass holds more than one [Na, Nt, T] logit block, nor any
  state that grows with D.

Normalisation. Default: Eq. 4, the mean of ℓ over every scored (clip, text, frame)
triple of the global batch, so the loss does not change with the device count.
``reference_normalizer=True`` reproduces openflam 1.0.2: each block's own mean, summed
over the blocks a device sees, foreign blocks divided by the embedding size instead of T
(quirk Q1), averaged over devices. openflam's stale α/β/mask in its later bidirectional
hops for ≥ 4 devices (quirk Q2) is not reproduced: here every text travels with its own
α, β, mask and id. Empty blocks contribute 0 instead of openflam's 0/0.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from flam_jax.errors import InputError
from flam_jax.losses._compat import axes_size, axes_tuple, shard_map


class SedBatch(NamedTuple):
    """SED-batch embeddings. Local shapes; a global array concatenates device blocks."""

    frames: jax.Array  # [Na, T, E] unit-norm frame embeddings
    audio_mask: jax.Array  # [Na] bool, valid clips
    text_emb: jax.Array  # [Nt, E] unit-norm text embeddings
    alpha: jax.Array  # [Nt] per-text scale α (carries gradient)
    beta: jax.Array  # [Nt] per-text bias β (stop-gradient in this loss)
    text_mask: jax.Array  # [Nt] bool, valid texts
    caption_ids: jax.Array  # [Nt] int32, hash of the normalised caption
    labels: jax.Array  # [Na, Nt, T] {0,1}, local pairs only; padded entries 0


def frame_logits(frames, text_emb, alpha, beta, scale=1.0, bias=0.0) -> jax.Array:
    """z [Na, Nt, T] in float32; β enters through stop-gradient."""
    cos = jnp.einsum("itd,jd->ijt", frames, text_emb, preferred_element_type=jnp.float32)
    shift = bias + jax.lax.stop_gradient(beta).astype(jnp.float32)
    return scale * alpha.astype(jnp.float32)[None, :, None] * cos + shift[None, :, None]


def _pair_loss_sum(frames, text_emb, text_scale, text_shift, clip_mask, text_mask, signs):
    """Σ over valid pairs and frames of softplus(−y·z), z = text_scale·cos + text_shift."""
    cos = jnp.einsum("itd,jd->ijt", frames, text_emb, preferred_element_type=jnp.float32)
    z = text_scale[None, :, None] * cos + text_shift[None, :, None]
    pairs = (clip_mask[:, None] & text_mask[None, :]).astype(jnp.float32)
    return jnp.sum(jax.nn.softplus(-signs * z) * pairs[:, :, None])


def _shift(tree, axis_name, num_devices):
    """Send every array one device along the ring (d → d + 1)."""
    perm = [(d, (d + 1) % num_devices) for d in range(num_devices)]
    return jax.tree.map(lambda x: jax.lax.ppermute(x, axis_name, perm), tree)


def _received_text_masks(text_mask, ids, axis_name, num_devices):
    """[D−1, Nt]: which texts of the block received at each hop are scored (valid, not a
    duplicate of any valid local caption). Only masks and ids travel: a few bytes."""

    def hop(block, _):
        block = _shift(block, axis_name, num_devices)
        mask, block_ids = block
        dup = jnp.any(text_mask[None, :] & (ids[None, :] == block_ids[:, None]), axis=1)
        return block, mask & ~dup

    return jax.lax.scan(hop, (text_mask, ids), None, length=num_devices - 1)[1]


# The ring as one custom-VJP function. Autodiff of a scan would store every received
# text block for the backward pass (memory growing with D); instead the backward pass
# sends the blocks around the ring again, each with its gradient accumulator, which
# arrives back at the block's owner after a full turn. Both passes hold one
# [Na, Nt, T] logit block at a time and nothing else that grows with D.
@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _ring_sum(axis_name, num_devices, frames, emb, scale, shift, clip_mask, text_mask, signs, masks, weights):
    """Σ_k weights[k]·(loss sum of the text block received at hop k); hop 0 is the own block."""
    return _ring_sum_fwd(
        axis_name, num_devices, frames, emb, scale, shift, clip_mask, text_mask, signs, masks, weights
    )[0]


def _ring_sum_fwd(
    axis_name, num_devices, frames, emb, scale, shift, clip_mask, text_mask, signs, masks, weights
):
    total = weights[0] * _pair_loss_sum(frames, emb, scale, shift, clip_mask, text_mask, signs)
    if num_devices > 1:

        def hop(carry, step):
            block, total = carry
            mask, weight = step
            block = _shift(block, axis_name, num_devices)
            total = total + weight * _pair_loss_sum(frames, *block, clip_mask, mask, -1.0)
            return (block, total), None

        (_, total), _ = jax.lax.scan(hop, ((emb, scale, shift), total), (masks, weights[1:]))
    return total, (frames, emb, scale, shift, clip_mask, text_mask, signs, masks, weights)


def _ring_sum_bwd(axis_name, num_devices, residuals, g):
    frames, emb, scale, shift, clip_mask, text_mask, signs, masks, weights = residuals
    _, pull = jax.vjp(
        lambda f, e, a, b: _pair_loss_sum(f, e, a, b, clip_mask, text_mask, signs), frames, emb, scale, shift
    )
    d_frames, *d_block = pull(g * weights[0])
    if num_devices > 1:

        def hop(carry, step):
            block, d_block, d_frames = carry
            mask, weight = step
            block, d_block = _shift((block, d_block), axis_name, num_devices)
            _, pull = jax.vjp(
                lambda f, e, a, b: _pair_loss_sum(f, e, a, b, clip_mask, mask, -1.0), frames, *block
            )
            d_f, *d_b = pull(g * weight)
            d_block = [x + y for x, y in zip(d_block, d_b, strict=True)]
            return (block, d_block, d_frames + d_f), None

        # The accumulator starts with the owner's own-block gradient and travels with its block.
        (_, d_block, d_frames), _ = jax.lax.scan(
            hop, ((emb, scale, shift), d_block, d_frames), (masks, weights[1:])
        )
        d_block = _shift(d_block, axis_name, num_devices)  # one more hop: back to the owner
    return (d_frames, *d_block, None, None, None, None, None)


_ring_sum.defvjp(_ring_sum_fwd, _ring_sum_bwd)


def _safe_mean(total, count, per_pair_size):
    """total / (count · per_pair_size), and 0 for an empty block (openflam gives NaN)."""
    return jnp.where(count > 0, total / (jnp.maximum(count, 1.0) * per_pair_size), 0.0)


def _signs(labels) -> jax.Array:
    return 2.0 * labels.astype(jnp.float32) - 1.0


def _check(batch: SedBatch, num_blocks: int) -> None:
    na, t, e = batch.frames.shape
    nt = batch.text_emb.shape[0]
    if num_blocks < 1 or na % num_blocks or nt % num_blocks:
        raise InputError(f"{na} clips and {nt} texts do not split into {num_blocks} equal device blocks")
    expected = {
        "audio_mask": (na,),
        "text_emb": (nt, e),
        "alpha": (nt,),
        "beta": (nt,),
        "text_mask": (nt,),
        "caption_ids": (nt,),
        "labels": (na, nt // num_blocks, t),
    }
    for name, shape in expected.items():
        if tuple(getattr(batch, name).shape) != shape:
            raise InputError(
                f"SED batch field {name} has shape {getattr(batch, name).shape}, expected {shape}"
            )


def framewise_loss_dense(
    batch: SedBatch,
    *,
    num_blocks: int = 1,
    scale=1.0,
    bias=0.0,
    reference_normalizer: bool = False,
) -> jax.Array:
    """The loss over the whole global batch in one tensor (global arrays, ``num_blocks`` devices)."""
    _check(batch, num_blocks)
    frames, audio_mask, text_emb, alpha, beta, text_mask, ids, labels = batch
    n_clips, n_frames, embed_dim = frames.shape
    n_texts = text_emb.shape[0]
    na, nt = n_clips // num_blocks, n_texts // num_blocks
    clip_block = jnp.arange(n_clips) // na
    text_block = jnp.arange(n_texts) // nt
    own = clip_block[:, None] == text_block[None, :]
    # Local labels [i, j mod Nt] placed on the own-block columns; foreign pairs negative.
    full_labels = jnp.where(own[:, :, None], jnp.tile(labels, (1, num_blocks, 1)), 0)
    # dup[b, j]: text j equals some valid text of block b.
    ids_by_block = ids.reshape(num_blocks, nt)
    valid_by_block = text_mask.reshape(num_blocks, nt)
    dup = jnp.any(valid_by_block[:, :, None] & (ids_by_block[:, :, None] == ids[None, None, :]), axis=1)
    drop = dup[clip_block] & ~own
    pairs = audio_mask[:, None] & text_mask[None, :] & ~drop
    z = frame_logits(frames, text_emb, alpha, beta, scale, bias)
    per_pair = jnp.sum(jax.nn.softplus(-_signs(full_labels) * z), axis=-1) * pairs
    pairs = pairs.astype(jnp.float32)
    if not reference_normalizer:
        return _safe_mean(jnp.sum(per_pair), jnp.sum(pairs), n_frames)
    sums = per_pair.reshape(num_blocks, na, num_blocks, nt).sum(axis=(1, 3))
    counts = pairs.reshape(num_blocks, na, num_blocks, nt).sum(axis=(1, 3))
    size = jnp.where(jnp.eye(num_blocks, dtype=bool), n_frames, embed_dim)
    return jnp.mean(jnp.sum(_safe_mean(sums, counts, size), axis=1))


def framewise_loss_local(
    batch: SedBatch,
    scale,
    bias,
    *,
    axis_name: tuple[str, ...],
    num_devices: int,
    reference_normalizer: bool = False,
) -> jax.Array:
    """The ring loss as seen from one device; call it inside ``shard_map`` over ``axis_name``.

    Returns the global loss, identical on every device.
    """
    frames, audio_mask, text_emb, alpha, beta, text_mask, ids, labels = batch
    n_frames, embed_dim = frames.shape[1], frames.shape[2]
    if num_devices > 1:
        masks = _received_text_masks(text_mask, ids, axis_name, num_devices)
    else:
        masks = jnp.zeros((0, text_mask.shape[0]), bool)
    valid_clips = jnp.sum(audio_mask.astype(jnp.float32))
    texts = jnp.concatenate([jnp.sum(text_mask, keepdims=True), jnp.sum(masks, axis=1)])
    counts = valid_clips * texts.astype(jnp.float32)  # valid pairs per hop
    if reference_normalizer:
        sizes = jnp.where(jnp.arange(num_devices) == 0, n_frames, embed_dim)
        weights = _safe_mean(1.0, counts, sizes) / num_devices
    else:
        weights = jnp.full(
            (num_devices,), _safe_mean(1.0, jax.lax.psum(jnp.sum(counts), axis_name), n_frames)
        )
    text_scale = scale * alpha.astype(jnp.float32)
    text_shift = bias + jax.lax.stop_gradient(beta).astype(jnp.float32)
    local = _ring_sum(
        axis_name,
        num_devices,
        frames,
        text_emb,
        text_scale,
        text_shift,
        audio_mask,
        text_mask,
        _signs(labels),
        masks,
        weights,
    )
    return jax.lax.psum(local, axis_name)


def framewise_loss_ring(
    batch: SedBatch,
    *,
    mesh: Mesh,
    batch_axes: str | tuple[str, ...] = ("data",),
    scale=1.0,
    bias=0.0,
    reference_normalizer: bool = False,
) -> jax.Array:
    """The production loss on global (block-concatenated) arrays; usable inside ``jax.jit``.

    The leading axis of every field is split over ``batch_axes`` of ``mesh`` (in mesh
    order), one block per device, as the data pipeline lays it out.
    """
    axes = axes_tuple(batch_axes)
    num_devices = axes_size(mesh, axes)
    _check(batch, num_devices)
    spec = P(axes)
    body = shard_map(
        lambda b, s, c: framewise_loss_local(
            b, s, c, axis_name=axes, num_devices=num_devices, reference_normalizer=reference_normalizer
        ),
        mesh=mesh,
        in_specs=(SedBatch(*([spec] * len(SedBatch._fields))), P(), P()),
        out_specs=P(),
    )
    return body(batch, jnp.asarray(scale, jnp.float32), jnp.asarray(bias, jnp.float32))
