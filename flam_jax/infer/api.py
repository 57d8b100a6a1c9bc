"""``FLAM``: the Python inference API over an export directory (DESIGN.md, FLAM_SPEC §7).

    m = FLAM.load(EXPORT_DIR)
    a = m.embed_audio(wave)            # .frames [B,F,512], .global_ [B,512]
    t = m.embed_text(["a dog barking"])  # .emb [N,512], .alpha [N], .beta [N]
    s = m.frame_scores(a, t)           # [B,N,F] in [0,1]

Results are numpy arrays. The model functions are jitted once per input shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from flam_jax.errors import InputError

SAMPLE_RATE = 48000


@dataclasses.dataclass(frozen=True)
class AudioEmbedding:
    frames: np.ndarray  # [B, F, D] unit norm
    global_: np.ndarray  # [B, D] unit norm


@dataclasses.dataclass(frozen=True)
class TextEmbedding:
    texts: list[str]
    emb: np.ndarray  # [N, D] unit norm
    alpha: np.ndarray  # [N] per-text scale
    beta: np.ndarray  # [N] per-text bias


class FLAM:
    """A loaded FLAM model with its tokenizer."""

    def __init__(self, model, model_config, tokenizer=None):
        self.model = model
        self.model_config = model_config
        self.tokenizer = tokenizer
        graphdef, state = nnx.split(model)

        def audio_fn(state, wave):
            return nnx.merge(graphdef, state).embed_audio(wave)

        def text_fn(state, ids, mask):
            return nnx.merge(graphdef, state).embed_text(ids, mask)

        self._state = state
        self._audio_fn = jax.jit(audio_fn)
        self._text_fn = jax.jit(text_fn)

    @classmethod
    def load(cls, export_dir: str) -> FLAM:
        """Open an export directory; ModelLoadError if it is missing, corrupt or inconsistent."""
        from flam_jax.export.export_dir import load_export

        return cls(*load_export(export_dir))

    def save(self, out_dir: str, source: str = "") -> None:
        from flam_jax.export.export_dir import save_export
        from flam_jax.export.weights import get_weights

        save_export(out_dir, get_weights(self.model), self.model_config, self.tokenizer, source=source)

    @property
    def num_frames(self) -> int:
        return self.model.audio.cfg.num_frames

    def embed_audio(self, wave, sample_rate: int | None = None) -> AudioEmbedding:
        """wave: [N] or [B, N] float samples at 48 kHz, N <= 480000 (shorter is stretched)."""
        from flam_jax.audio.frontend import validate_waveform

        if sample_rate is not None and sample_rate != SAMPLE_RATE:
            raise InputError(f"sample rate {sample_rate} Hz given; FLAM needs {SAMPLE_RATE} Hz audio")
        wave = np.asarray(wave)
        if wave.ndim == 1:
            wave = wave[None]
        validate_waveform(wave)  # rank, dtype, length and NaN/inf, before jit
        frames, global_ = self._audio_fn(self._state, wave.astype(np.float32))
        return AudioEmbedding(np.asarray(frames), np.asarray(global_))

    def embed_text(self, texts: Sequence[str] | str) -> TextEmbedding:
        if self.tokenizer is None:
            raise InputError("this export has no tokenizer; text queries cannot be embedded")
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids, mask = self.tokenizer.encode(texts)
        emb, alpha, beta = self._text_fn(self._state, ids, mask)
        return TextEmbedding(texts, np.asarray(emb), np.asarray(alpha), np.asarray(beta))

    def frame_scores(
        self, audio: AudioEmbedding, text: TextEmbedding, method: str = "unbiased"
    ) -> np.ndarray:
        """[B, N, F] frame scores of every text against every clip."""
        from flam_jax.models.flam import frame_scores

        if method not in ("unbiased", "approximate"):
            raise InputError(f"method must be 'unbiased' or 'approximate', got {method!r}")
        return np.asarray(frame_scores(audio.frames, text.emb, text.alpha, text.beta, method))
