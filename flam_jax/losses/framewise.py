"""Frame-wise sigmoid loss with per-text scale and bias (FLAM_SPEC §6.2, paper Eq. 4).

z[i,j,t] = scale·α_j·⟨a_{i,t}, e_j⟩ + bias + sg(β_j),  ℓ = softplus(−y·z),  y = 2Y − 1.

The batch is made of G self-contained blocks (groups): clips and the texts made from
them, labels covering only those pairs. A text of another group is a negative for every
clip of a group unless its caption id equals the id of a valid text of that group (then
it is dropped, not scored). Usually G = D, one group per device; G may be any multiple
of D, which keeps the loss's meaning fixed when the device count changes.

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


def _weighted_loss_sum(frames, text_emb, text_scale, text_shift, signs, pair_weight):
    """Σ_ij pair_weight[i, j]·Σ_t softplus(−y·z), z = text_scale·cos + text_shift (one block)."""
    cos = jnp.einsum("itd,jd->ijt", frames, text_emb, preferred_element_type=jnp.float32)
    z = text_scale[None, :, None] * cos + text_shift[None, :, None]
    return jnp.sum(jax.nn.softplus(-signs * z) * pair_weight[:, :, None])


def _pair_weights(clip_mask, text_masks, group_weights):
    """[Na, Nt] weight of every pair at one hop, from the per-clip-group text masks
    [k, Nt] and the per-(clip group, text group) weights [k, k]."""
    k, nt = text_masks.shape
    clip_group = jnp.arange(clip_mask.shape[0]) // (clip_mask.shape[0] // k)
    text_group = jnp.arange(nt) // (nt // k)
    return clip_mask[:, None] * text_masks[clip_group] * group_weights[clip_group][:, text_group]


def _shift(tree, axis_name, num_devices):
    """Send every array one device along the ring (d → d + 1)."""
    if num_devices == 1:
        return tree
    perm = [(d, (d + 1) % num_devices) for d in range(num_devices)]
    return jax.tree.map(lambda x: jax.lax.ppermute(x, axis_name, perm), tree)


def _scored_texts(text_mask, ids, block_mask, block_ids, k):
    """[k, Nt]: the texts of a block scored against each local clip group: valid, and
    not a duplicate of any valid caption of that group."""
    group_ids, group_valid = ids.reshape(k, -1), text_mask.reshape(k, -1)
    dup = jnp.any(group_valid[:, :, None] & (group_ids[:, :, None] == block_ids[None, None, :]), axis=1)
    return block_mask[None, :] & ~dup


def _hop_text_masks(text_mask, ids, k, axis_name, num_devices):
    """[D, k, Nt] scored texts at every hop (hop 0: this device's own texts). Only masks
    and ids travel here: a few bytes per text."""
    nt = text_mask.shape[0]
    own_group = jnp.arange(k)[:, None] == (jnp.arange(nt) // (nt // k))[None, :]
    # A group's own texts carry its labels; the duplicate rule applies to other groups only.
    own = jnp.where(own_group, text_mask[None, :], _scored_texts(text_mask, ids, text_mask, ids, k))
    if num_devices == 1:
        return own[None]

    def hop(block, _):
        block = _shift(block, axis_name, num_devices)
        return block, _scored_texts(text_mask, ids, *block, k)

    _, foreign = jax.lax.scan(hop, (text_mask, ids), None, length=num_devices - 1)
    return jnp.concatenate([own[None], foreign])


# The ring as one custom-VJP function. Autodiff of a scan would store every received
# text block for the backward pass (memory growing with D); instead the backward pass
# sends the blocks around the ring again, each with its gradient accumulator, which
# arrives back at the block's owner after a full turn. Both passes hold one
# [Na, Nt, T] logit block at a time and nothing else that grows with D. The own block
# is hop 0 of the same loop (with the labels' signs): a separate step before a one-step
# loop lets XLA unroll it (D = 2) and schedule two blocks at once.
@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _ring_sum(axis_name, num_devices, frames, emb, scale, shift, signs, clip_mask, masks, weights):
    """Σ over hops of the weighted loss sum of the text block held at that hop; hop 0
    is the own block (signs from the labels), later hops are all negative."""
    return _ring_sum_fwd(axis_name, num_devices, frames, emb, scale, shift, signs, clip_mask, masks, weights)[
        0
    ]


def _hop_inputs(signs, clip_mask, masks, weights, step):
    """(targets, pair weights) of one hop."""
    index, hop_masks, hop_weights = step
    return jnp.where(index == 0, signs, -1.0), _pair_weights(clip_mask, hop_masks, hop_weights)


def _ring_sum_fwd(axis_name, num_devices, frames, emb, scale, shift, signs, clip_mask, masks, weights):
    def hop(carry, step):
        block, total = carry
        targets, weight = _hop_inputs(signs, clip_mask, masks, weights, step)
        total = total + _weighted_loss_sum(frames, *block, targets, weight)
        return (_shift(block, axis_name, num_devices), total), None

    steps = (jnp.arange(num_devices), masks, weights)
    zero = jnp.zeros_like(shift[0])  # zeros_like keeps the device-varying type a carry needs
    (_, total), _ = jax.lax.scan(hop, ((emb, scale, shift), zero), steps)
    return total, (frames, emb, scale, shift, signs, clip_mask, masks, weights)


def _ring_sum_bwd(axis_name, num_devices, residuals, g):
    frames, emb, scale, shift, signs, clip_mask, masks, weights = residuals

    def hop(carry, step):
        block, d_block, d_frames = carry
        targets, weight = _hop_inputs(signs, clip_mask, masks, weights, step)
        _, pull = jax.vjp(lambda f, e, a, b: _weighted_loss_sum(f, e, a, b, targets, weight), frames, *block)
        d_f, *d_b = pull(g)
        d_block = tuple(x + y.astype(jnp.float32) for x, y in zip(d_block, d_b, strict=True))
        # The accumulator travels with its block; after D hops both are back home.
        block, d_block = _shift((block, d_block), axis_name, num_devices)
        return (block, d_block, d_frames + d_f.astype(jnp.float32)), None

    block = (emb, scale, shift)
    # float32 accumulators (bf16 embeddings would lose the small per-hop terms); zeros_like
    # keeps the device-varying type the loop carry needs.
    zeros = jax.tree.map(lambda x: jnp.zeros_like(x, jnp.float32), (block, frames))
    steps = (jnp.arange(num_devices), masks, weights)
    (_, d_block, d_frames), _ = jax.lax.scan(hop, (block, *zeros), steps)
    d_emb, d_scale, d_shift = d_block
    return (d_frames.astype(frames.dtype), d_emb.astype(emb.dtype), d_scale, d_shift, None, None, None, None)


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


def _own_signs(labels, k):
    """±1 targets of the device's clips against its own texts: labels within a group,
    −1 between its k groups."""
    signs = _signs(labels)
    if k == 1:
        return signs
    na, nt_group = labels.shape[0], labels.shape[1]
    same = (jnp.arange(na) // (na // k))[:, None] == (jnp.arange(k * nt_group) // nt_group)[None, :]
    return jnp.where(same[:, :, None], jnp.tile(signs, (1, k, 1)), -1.0)


def framewise_loss_local(
    batch: SedBatch,
    scale,
    bias,
    *,
    axis_name: tuple[str, ...],
    num_devices: int,
    groups_per_device: int = 1,
    reference_normalizer: bool = False,
) -> jax.Array:
    """The ring loss as seen from one device; call it inside ``shard_map`` over ``axis_name``.

    The device's arrays hold ``groups_per_device`` self-contained groups (labels [Na, Nt/k, T]).
    Returns the global loss, identical on every device.
    """
    frames, audio_mask, text_emb, alpha, beta, text_mask, ids, labels = batch
    n_frames, embed_dim = frames.shape[1], frames.shape[2]
    k, nt = groups_per_device, text_emb.shape[0]
    masks = _hop_text_masks(text_mask, ids, k, axis_name, num_devices)  # [D, k, Nt]
    valid_clips = audio_mask.reshape(k, -1).sum(axis=1).astype(jnp.float32)
    texts = masks.reshape(num_devices, k, k, nt // k).sum(axis=-1).astype(jnp.float32)
    counts = valid_clips[None, :, None] * texts  # valid pairs per (hop, clip group, text group)
    if reference_normalizer:
        own = (jnp.arange(num_devices) == 0)[:, None, None] & jnp.eye(k, dtype=bool)[None]
        weights = _safe_mean(1.0, counts, jnp.where(own, n_frames, embed_dim)) / (k * num_devices)
    else:
        total_pairs = jax.lax.psum(jnp.sum(counts), axis_name)
        weights = jnp.broadcast_to(_safe_mean(1.0, total_pairs, n_frames), counts.shape)
    local = _ring_sum(
        axis_name,
        num_devices,
        frames,
        text_emb,
        scale * alpha.astype(jnp.float32),
        bias + jax.lax.stop_gradient(beta).astype(jnp.float32),
        _own_signs(labels, k),
        audio_mask,
        masks,
        weights,
    )
    return jax.lax.psum(local, axis_name)


def framewise_loss_ring(
    batch: SedBatch,
    *,
    mesh: Mesh,
    batch_axes: str | tuple[str, ...] = ("data",),
    num_blocks: int | None = None,
    scale=1.0,
    bias=0.0,
    reference_normalizer: bool = False,
) -> jax.Array:
    """The production loss on global (block-concatenated) arrays; usable inside ``jax.jit``.

    The leading axis of every field is split over ``batch_axes`` of ``mesh`` (in mesh
    order). ``num_blocks`` self-contained groups (default: one per device; a multiple of
    the device count) equals ``framewise_loss_dense(..., num_blocks=num_blocks)``.
    """
    axes = axes_tuple(batch_axes)
    num_devices = axes_size(mesh, axes)
    num_blocks = num_devices if num_blocks is None else num_blocks
    if num_blocks % num_devices:
        raise InputError(f"{num_blocks} SED groups do not split over {num_devices} devices")
    _check(batch, num_blocks)
    spec = P(axes)
    body = shard_map(
        lambda b, s, c: framewise_loss_local(
            b,
            s,
            c,
            axis_name=axes,
            num_devices=num_devices,
            groups_per_device=num_blocks // num_devices,
            reference_normalizer=reference_normalizer,
        ),
        mesh=mesh,
        in_specs=(SedBatch(*([spec] * len(SedBatch._fields))), P(), P()),
        out_specs=P(),
    )
    return body(batch, jnp.asarray(scale, jnp.float32), jnp.asarray(bias, jnp.float32))
