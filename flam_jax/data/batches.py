"""SED and global batches: fixed-shape numpy dicts ready for a jitted, sharded step.

The SED batch is split into ``groups`` self-contained device blocks (see
/tmp/interfaces.md, "Data"): block g holds ``clips_per_group`` mixtures and up to
``texts_per_clip * clips_per_group`` texts, all drawn from its own mixtures, and
``labels[i, j]`` says where text j of row i's block is active in mixture i. A caption
present in several mixtures of the block is one text, positive wherever it sounds, also
where it is another caption of a sounding clip (``Mixture.synonyms``).
"""

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from flam_jax.data.simulate import Mixture
from flam_jax.errors import DataError

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
    frames: int = 32
    num_samples: int = 480_000

    @property
    def clips(self) -> int:
        return self.groups * self.clips_per_group

    @property
    def texts_per_group(self) -> int:
        return self.texts_per_clip * self.clips_per_group


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
    audio = np.empty((spec.clips, spec.num_samples), dtype=np.float32)  # rows are filled below
    audio[len(mixtures) :] = 0.0
    audio_mask = np.zeros(spec.clips, dtype=bool)
    labels = np.zeros((spec.clips, nt_g, spec.frames), dtype=np.uint8)
    texts = [PAD_TEXT] * (spec.groups * nt_g)
    text_mask = np.zeros(spec.groups * nt_g, dtype=bool)
    caption_ids = np.full(spec.groups * nt_g, PAD_CAPTION_ID, dtype=np.int32)
    for g in range(spec.groups):
        block = list(mixtures[g * na_g : (g + 1) * na_g])
        chosen = _block_texts(block, nt_g)
        slot = {key: j for j, (key, _) in enumerate(chosen)}
        for j, (key, original) in enumerate(chosen):
            texts[g * nt_g + j] = original
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
    ids, attention = tokenizer.encode(texts)
    return {
        "audio": audio,
        "audio_mask": audio_mask,
        "text_tokens": np.asarray(ids, dtype=np.int32),
        "text_attention": np.asarray(attention, dtype=np.int32),
        "text_mask": text_mask,
        "caption_ids": caption_ids,
        "labels": labels,
    }


def crop_or_loop(wave: np.ndarray, rng: np.random.Generator, num_samples: int = 480_000) -> np.ndarray:
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
    return {
        "audio": np.stack([p.audio for p in pairs]).astype(np.float32, copy=False),
        "text_tokens": np.asarray(ids, dtype=np.int32),
        "text_attention": np.asarray(attention, dtype=np.int32),
        "caption_ids": np.array([caption_id(p.caption) for p in pairs], dtype=np.int32),
    }
