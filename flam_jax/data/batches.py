"""SED and global batches: fixed-shape numpy dicts ready for a jitted, sharded step.

The SED batch is split into ``groups`` self-contained device blocks (the frame-wise
loss's blocks, ``losses.framewise``): block g holds ``clips_per_group`` mixtures and up to
``texts_per_clip * clips_per_group`` texts, all drawn from its own mixtures, and
``labels[i, j]`` says where text j of row i's block is active in mixture i. A caption
present in several mixtures of the block is one text, positive wherever it sounds, also
where it is another caption of a sounding clip (``Mixture.synonyms``).

``sed_fields`` / ``global_fields`` (one host's batch) and ``train_fields`` (the whole
step's batches) are the one statement of the layout: every field's name, shape and
dtype. The assembly below allocates from them; the compile-only inputs (train.aot), the
trainer's stand-in batches (tests) and the step benchmark build theirs from them too.
Every field's leading dimension is its rows (clips or texts): the step splits it over
every device, each device a contiguous slice, and keeps the other dimensions whole
(``train.sharding.batch_sharding``), so rows must divide evenly over the devices.
"""

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from flam_jax.data.simulate import Mixture
from flam_jax.errors import DataError
from flam_jax.timeline import NUM_FRAMES, WINDOW_SAMPLES

PAD_CAPTION_ID = 0  # real caption ids are never 0
# Text encoded in padding slots: tokenizers reject "", and an all-masked row can give NaNs.
PAD_TEXT = "padding"


class TextTokenizer(Protocol):
    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]: ...


_SPACES = re.compile(r"\s+")


def normalise_caption(text: str) -> str:
    """Lower case, single spaces, no surrounding space or trailing full stop."""
    return _SPACES.sub(" ", text.strip().lower()).rstrip(" .!?;,")


def caption_id(text: str) -> int:
    """A stable int32 id of the normalised caption in [1, 2**31 - 1] (0 marks padding)."""
    digest = hashlib.blake2b(normalise_caption(text).encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1) + 1


@dataclasses.dataclass(frozen=True)
class SedBatchSpec:
    groups: int  # device blocks this host feeds
    clips_per_group: int  # Na_g
    texts_per_clip: int = 5  # N: Nt_g = N * Na_g
    frames: int = NUM_FRAMES
    num_samples: int = WINDOW_SAMPLES

    @property
    def clips(self) -> int:
        return self.groups * self.clips_per_group

    @property
    def texts_per_group(self) -> int:
        return self.texts_per_clip * self.clips_per_group


Fields = dict[str, tuple[tuple[int, ...], np.dtype]]  # field -> (shape, dtype)


def sed_fields(spec: SedBatchSpec, text_length: int) -> Fields:
    """The SED batch of ``spec``: Na mixtures, Nt = G * Nt_g texts, labels per block."""
    na, nt = spec.clips, spec.groups * spec.texts_per_group
    return {
        "audio": ((na, spec.num_samples), np.dtype(np.float32)),
        "audio_mask": ((na,), np.dtype(bool)),
        "text_tokens": ((nt, text_length), np.dtype(np.int32)),
        "text_attention": ((nt, text_length), np.dtype(np.int32)),
        "text_mask": ((nt,), np.dtype(bool)),
        "caption_ids": ((nt,), np.dtype(np.int32)),
        "labels": ((na, spec.texts_per_group, spec.frames), np.dtype(np.uint8)),
    }


def global_fields(size: int, text_length: int, num_samples: int = WINDOW_SAMPLES) -> Fields:
    """The global batch: ``size`` audio-caption pairs."""
    return {
        "audio": ((size, num_samples), np.dtype(np.float32)),
        "text_tokens": ((size, text_length), np.dtype(np.int32)),
        "text_attention": ((size, text_length), np.dtype(np.int32)),
        "caption_ids": ((size,), np.dtype(np.int32)),
    }


def train_fields(
    config,
    *,
    sed_groups: int | None,
    with_global: bool = True,
    text_length: int | None = None,
    num_samples: int = WINDOW_SAMPLES,
    frames: int = NUM_FRAMES,
) -> dict[str, Fields]:
    """The whole step's batches (every host's rows together) for a training config:
    ``{"sed": ..., "global": ...}``. ``sed_groups``: the job's SED device blocks G
    (``train.sharding.sed_groups``), None for no SED batch; ``with_global``: whether
    there is a global batch. ``text_length`` defaults to model.context_length."""
    length = config.model.context_length if text_length is None else text_length
    out = {}
    if sed_groups is not None:
        spec = SedBatchSpec(
            groups=sed_groups,
            clips_per_group=config.data.sed_clips // sed_groups,
            texts_per_clip=config.data.texts_per_clip,
            frames=frames,
            num_samples=num_samples,
        )
        out["sed"] = sed_fields(spec, length)
    if with_global:
        out["global"] = global_fields(config.data.global_batch, length, num_samples)
    return out


def _block_texts(mixtures: Sequence[Mixture], budget: int) -> list[tuple[str, str]]:
    """(normalised, first-seen original) distinct captions, round robin, up to ``budget``.

    Round robin (each mixture's first caption, then each one's second, ...) keeps every
    mixture represented when the block has more distinct captions than slots.
    """
    queues = [list(m.captions) for m in mixtures]
    chosen: list[tuple[str, str]] = []
    seen: set[str] = set()
    depth = max((len(q) for q in queues), default=0)
    for k in range(depth):
        for q in queues:
            if k < len(q) and len(chosen) < budget:
                key = normalise_caption(q[k])
                if key not in seen:
                    seen.add(key)
                    chosen.append((key, q[k].strip()))
    return chosen


def sed_batch(mixtures: Sequence[Mixture], tokenizer: TextTokenizer, spec: SedBatchSpec) -> dict:
    """Assemble the SED batch; fewer mixtures than ``spec.clips`` are padded and masked."""
    if len(mixtures) > spec.clips:
        raise DataError(f"SED batch: {len(mixtures)} mixtures for {spec.clips} slots")
    na_g, nt_g = spec.clips_per_group, spec.texts_per_group
    blocks = [list(mixtures[g * na_g : (g + 1) * na_g]) for g in range(spec.groups)]
    chosen = [_block_texts(block, nt_g) for block in blocks]
    texts = [PAD_TEXT] * (spec.groups * nt_g)
    for g, block_texts in enumerate(chosen):
        for j, (_, original) in enumerate(block_texts):
            texts[g * nt_g + j] = original
    ids, attention = tokenizer.encode(texts)
    # Every field from the layout, zero (padding) until filled; tokens as encoded.
    fields = sed_fields(spec, np.shape(ids)[1])
    batch = {name: np.zeros(shape, dtype) for name, (shape, dtype) in fields.items()}
    batch["text_tokens"][:] = ids
    batch["text_attention"][:] = attention
    audio, audio_mask, labels = batch["audio"], batch["audio_mask"], batch["labels"]
    text_mask, caption_ids = batch["text_mask"], batch["caption_ids"]
    caption_ids[:] = PAD_CAPTION_ID
    for g, (block, block_texts) in enumerate(zip(blocks, chosen, strict=True)):
        slot = {key: j for j, (key, _) in enumerate(block_texts)}
        for j, (key, _) in enumerate(block_texts):
            text_mask[g * nt_g + j] = True
            caption_ids[g * nt_g + j] = caption_id(key)
        for i, mixture in enumerate(block):
            row = g * na_g + i
            if mixture.audio.shape != (spec.num_samples,):
                raise DataError(f"SED batch: mixture audio has shape {mixture.audio.shape}")
            audio[row] = mixture.audio
            audio_mask[row] = True
            for k, frames in enumerate(mixture.labels):
                # A text that is another caption of the event's clip is true there too.
                for j in {slot.get(normalise_caption(c)) for c in mixture.event_captions(k)} - {None}:
                    labels[row, j] |= frames.astype(np.uint8)
    return batch


def crop_or_loop(wave: np.ndarray, rng: np.random.Generator, num_samples: int = WINDOW_SAMPLES) -> np.ndarray:
    """A random ``num_samples`` crop; shorter clips are repeated end to end from a random phase."""
    if len(wave) == 0:
        raise DataError("global batch: clip holds no samples")
    if len(wave) >= num_samples:
        start = int(rng.integers(0, len(wave) - num_samples + 1))
        return np.ascontiguousarray(wave[start : start + num_samples], dtype=np.float32)
    reps = -(-num_samples // len(wave)) + 1
    start = int(rng.integers(0, len(wave)))
    return np.tile(wave, reps)[start : start + num_samples].astype(np.float32)


@dataclasses.dataclass
class Pair:
    audio: np.ndarray  # [num_samples] float32
    caption: str
    source: str = ""
    decode_errors: list[str] = dataclasses.field(default_factory=list)


def global_batch(pairs: Sequence[Pair], tokenizer: TextTokenizer) -> dict:
    """Audio–caption pairs for the global (InfoNCE) loss."""
    ids, attention = tokenizer.encode([p.caption for p in pairs])
    values = {
        "audio": np.stack([p.audio for p in pairs]),
        "text_tokens": ids,
        "text_attention": attention,
        "caption_ids": [caption_id(p.caption) for p in pairs],
    }
    fields = global_fields(len(pairs), np.shape(ids)[1], values["audio"].shape[1])
    return {name: np.asarray(values[name], dtype) for name, (_, dtype) in fields.items()}
