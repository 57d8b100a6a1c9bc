"""``FLAM``: the Python inference API over an export directory (DESIGN.md, FLAM_SPEC §7).

    m = FLAM.load(EXPORT_DIR)
    a = m.embed_audio(wave_or_path)      # one clip <= 10 s as the model sees it: .frames, .global_
    t = m.embed_text(["a dog barking"])  # .emb [N,512], .alpha [N], .beta [N]
    s = m.frame_scores(a, t)             # [B,N,F] in [0,1]
    tl = m.score(path, ["a dog barking"])   # any length: .scores [N, T] at 3.2 Hz
    d = m.detect(path, ["a dog barking"])   # tl + events (onset, offset, peak score)

Results are numpy arrays. Audio is resampled to 48 kHz and mixed to mono. ``embed_audio``
embeds exactly the clip it is given (shorter clips are stretched by the front end, as in
openflam). ``score``/``detect``/``embed_windows`` work on recordings of any length with
``flam_jax.timeline``'s two rules (frame scores: zero-padded 10 s windows at a hop; global
embedding: the windows training sees, averaged), batched in power-of-two batch buckets of
fixed 10 s windows, so mixed-length files reuse the compiled functions instead of
compiling per file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import jax
import numpy as np
import soxr
from flax import nnx

from flam_jax import timeline
from flam_jax.audio.frontend import validate_waveform
from flam_jax.audio.io import load_audio
from flam_jax.errors import InputError
from flam_jax.export.export_dir import load_export, save_export
from flam_jax.export.weights import get_weights
from flam_jax.infer.events import Event, extract_events
from flam_jax.models.flam import frame_scores
from flam_jax.timeline import SAMPLE_RATE, WINDOW_SAMPLES

METHODS = ("unbiased", "approximate")


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


@dataclasses.dataclass(frozen=True)
class WindowEmbedding:
    """A recording of any length as 10 s windows (what ``flam-search`` indexes)."""

    source: str
    duration_s: float
    num_samples: int
    starts: list[int]  # window start samples
    frames: np.ndarray  # [W, F, D] unit norm
    global_: np.ndarray  # [D] unit norm: timeline's global rule (the windows training sees)


@dataclasses.dataclass(frozen=True)
class Timeline:
    """Frame scores of a whole recording: frame k covers [k, k+1) / frame_rate_hz seconds."""

    source: str
    duration_s: float
    texts: list[str]
    scores: np.ndarray  # [N, T]
    frame_rate_hz: float


@dataclasses.dataclass(frozen=True)
class Detection:
    timeline: Timeline
    events_per_query: list[list[Event]]

    @property
    def events(self) -> list[Event]:
        return sorted((e for q in self.events_per_query for e in q), key=lambda e: (e.onset, e.query))


def _to_mono(wave: np.ndarray) -> np.ndarray:
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise InputError(f"audio must be [samples] or [samples, channels], got shape {wave.shape}")
    channel_axis = 1 if wave.shape[1] <= wave.shape[0] else 0  # channels are the short axis
    return wave.mean(axis=channel_axis)


def _resample(wave: np.ndarray, sample_rate: int | None) -> np.ndarray:
    if sample_rate is None or sample_rate == SAMPLE_RATE:
        return wave
    if not (isinstance(sample_rate, int | np.integer) and sample_rate > 0):
        raise InputError(f"sample rate must be a positive integer, got {sample_rate!r}")

    if wave.ndim == 1:
        return soxr.resample(wave, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return np.stack([_resample(row, sample_rate) for row in wave])


def read_audio(audio, sample_rate: int | None = None) -> tuple[np.ndarray, str]:
    """(mono float32 samples at 48 kHz, a name for messages) from a path or an array."""
    if isinstance(audio, str | os.PathLike):
        return load_audio(audio), os.fspath(audio)
    wave = np.asarray(audio)
    if not np.issubdtype(wave.dtype, np.floating):
        raise InputError(f"audio array must be floating point in [-1, 1], got dtype {wave.dtype}")
    wave = _to_mono(wave.astype(np.float32, copy=False))
    if wave.size == 0:
        raise InputError("audio array holds no samples")
    if not np.isfinite(wave).all():
        raise InputError("audio array contains NaN or infinite samples")
    return np.ascontiguousarray(_resample(wave, sample_rate), dtype=np.float32), "<array>"


def batch_bucket(n: int, max_batch: int) -> int:
    """The padded batch size for ``n`` items: the next power of two, capped at ``max_batch``."""
    return min(max_batch, 1 << max(0, n - 1).bit_length())


class FLAM:
    """A loaded FLAM model with its tokenizer."""

    def __init__(self, model, model_config, tokenizer=None, *, max_batch: int = 8):
        if max_batch < 1 or max_batch & (max_batch - 1):
            raise InputError(f"max_batch must be a power of two, got {max_batch}")
        self.model = model
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        graphdef, state = nnx.split(model)

        def audio_fn(state, wave):
            return nnx.merge(graphdef, state).embed_audio(wave)

        def text_fn(state, ids, mask):
            return nnx.merge(graphdef, state).embed_text(ids, mask)

        self._state = state
        # jit caches one executable per input shape; callers below only use bucket shapes.
        self._audio_fn = jax.jit(audio_fn)
        self._text_fn = jax.jit(text_fn)
        self._score_fn = jax.jit(frame_scores, static_argnums=4)

    @classmethod
    def load(cls, export_dir: str, **kwargs) -> FLAM:
        """Open an export directory; ModelLoadError if it is missing, corrupt or inconsistent."""
        return cls(*load_export(os.fspath(export_dir)), **kwargs)

    def save(self, out_dir: str, source: str = "") -> None:
        save_export(out_dir, get_weights(self.model), self.model_config, self.tokenizer, source=source)

    @property
    def num_frames(self) -> int:
        return self.model.audio.cfg.num_frames

    @property
    def frame_rate_hz(self) -> float:
        return self.num_frames * SAMPLE_RATE / WINDOW_SAMPLES

    # ---- one clip as the model sees it -------------------------------------------------

    def embed_audio(self, wave, sample_rate: int | None = None) -> AudioEmbedding:
        """One clip (a path, or samples [N]) or a batch [B, N] of equal-length clips, <= 10 s.

        Any sample rate (``sample_rate``, default 48 kHz; files carry their own) is resampled
        to 48 kHz; shorter clips are stretched by the front end (openflam's behaviour).
        """
        if isinstance(wave, str | os.PathLike):
            wave = read_audio(wave)[0]
        wave = np.asarray(wave)
        if wave.ndim == 1:
            wave = wave[None]
        if wave.ndim == 2 and np.issubdtype(wave.dtype, np.floating):
            wave = _resample(wave.astype(np.float32, copy=False), sample_rate)
        validate_waveform(wave)  # rank, dtype, length and NaN/inf, before jit
        frames, global_ = self._audio_fn(self._state, wave.astype(np.float32))
        return AudioEmbedding(np.asarray(frames), np.asarray(global_))

    def embed_text(self, texts: Sequence[str] | str) -> TextEmbedding:
        if self.tokenizer is None:
            raise InputError("this export has no tokenizer; text queries cannot be embedded")
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids, mask = self.tokenizer.encode(texts)
        n = len(texts)
        # Pad to a power of two (repeating the first query) so query counts share compilations.
        size = max(n, batch_bucket(n, 1 << 30))
        if size > n:
            ids = np.concatenate([ids, np.repeat(ids[:1], size - n, 0)])
            mask = np.concatenate([mask, np.repeat(mask[:1], size - n, 0)])
        emb, alpha, beta = self._text_fn(self._state, ids, mask)
        return TextEmbedding(texts, np.asarray(emb)[:n], np.asarray(alpha)[:n], np.asarray(beta)[:n])

    def frame_scores(
        self, audio: AudioEmbedding, text: TextEmbedding, method: str = "unbiased"
    ) -> np.ndarray:
        """[B, N, F] frame scores of every text against every clip."""
        if method not in METHODS:
            raise InputError(f"method must be 'unbiased' or 'approximate', got {method!r}")
        return np.asarray(self._score_fn(audio.frames, text.emb, text.alpha, text.beta, method))

    # ---- recordings of any length ------------------------------------------------------

    def _chunks(self, items: np.ndarray):
        """(padded chunk, real count) in power-of-two batch buckets of at most ``max_batch``."""
        for lo in range(0, items.shape[0], self.max_batch):
            chunk = items[lo : lo + self.max_batch]
            size = batch_bucket(chunk.shape[0], self.max_batch)
            padded = np.zeros((size, *items.shape[1:]), items.dtype)
            padded[: chunk.shape[0]] = chunk
            yield padded, chunk.shape[0]

    def _embed_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames [W, F, D] and globals [W, D] of 480000-sample windows, in bucketed batches."""
        frames, globals_ = [], []
        for padded, count in self._chunks(windows.astype(np.float32, copy=False)):
            f, g = self._audio_fn(self._state, padded)
            frames.append(np.asarray(f)[:count])
            globals_.append(np.asarray(g)[:count])
        return np.concatenate(frames), np.concatenate(globals_)

    def _bucketed_scores(self, frames: np.ndarray, text: TextEmbedding, method: str) -> np.ndarray:
        """[W, N, F] scores, computed at bucket shapes so each file length reuses the compilation."""
        out = []
        for padded, count in self._chunks(np.asarray(frames, np.float32)):
            out.append(np.asarray(self._score_fn(padded, text.emb, text.alpha, text.beta, method))[:count])
        return np.concatenate(out)

    def _texts(self, texts) -> TextEmbedding:
        return texts if isinstance(texts, TextEmbedding) else self.embed_text(texts)

    def embed_windows(self, audio, sample_rate: int | None = None, hop_s: float = 10.0) -> WindowEmbedding:
        """A recording of any length: frames of zero-padded 10 s windows at ``hop_s``, and
        its global embedding (both rules of ``flam_jax.timeline``)."""
        wave, source = read_audio(audio, sample_rate)
        num_samples = wave.shape[0]
        hop = timeline.hop_samples(hop_s, self.num_frames)
        starts = timeline.window_starts(num_samples, hop)
        frames, globals_ = self._embed_windows(timeline.cut_windows(wave, starts))
        # A frame window that lies wholly inside the recording is also a global window.
        full = {s: g for s, g in zip(starts, globals_, strict=True) if s + WINDOW_SAMPLES <= num_samples}
        global_ = self.global_embedding(wave, embedded=full)
        return WindowEmbedding(source, num_samples / SAMPLE_RATE, num_samples, starts, frames, global_)

    def global_embedding(self, audio, sample_rate: int | None = None, *, embedded=None) -> np.ndarray:
        """[D] unit norm: a recording of any length by ``timeline``'s global rule.

        ``embedded`` maps start samples of full windows already embedded to their globals,
        which are reused rather than computed again.
        """
        wave = read_audio(audio, sample_rate)[0]
        starts = timeline.global_window_starts(wave.shape[0])
        embedded = embedded or {}
        todo = [i for i, s in enumerate(starts) if s not in embedded or wave.shape[0] < WINDOW_SAMPLES]
        fresh = {}
        if todo:
            _, new = self._embed_windows(timeline.global_windows(wave)[todo])
            fresh = dict(zip(todo, new, strict=True))
        rows = [fresh[i] if i in fresh else embedded[s] for i, s in enumerate(starts)]
        return timeline.mean_direction(np.stack(rows)).astype(np.float32)

    def window_scores(self, windows: WindowEmbedding, texts, method: str = "unbiased") -> Timeline:
        """Timeline scores of indexed windows (``embed_windows``) against texts."""
        if method not in METHODS:
            raise InputError(f"method must be 'unbiased' or 'approximate', got {method!r}")
        text = self._texts(texts)
        per_window = self._bucketed_scores(windows.frames, text, method)
        scores = timeline.average_windows(per_window, windows.starts, windows.num_samples)
        return Timeline(windows.source, windows.duration_s, text.texts, scores, self.frame_rate_hz)

    def score(
        self, audio, texts, *, sample_rate: int | None = None, hop_s: float = 5.0, method: str = "unbiased"
    ) -> Timeline:
        """Frame scores [N, T] of a recording of any length (10 s windows every ``hop_s``)."""
        if method not in METHODS:
            raise InputError(f"method must be 'unbiased' or 'approximate', got {method!r}")
        text = self._texts(texts)
        wave, source = read_audio(audio, sample_rate)
        hop = timeline.hop_samples(hop_s, self.num_frames)

        def score_windows(windows):
            out = []
            for padded, count in self._chunks(windows):
                frames, _ = self._audio_fn(self._state, padded)
                out.append(
                    np.asarray(self._score_fn(frames, text.emb, text.alpha, text.beta, method))[:count]
                )
            return np.concatenate(out)

        scores = timeline.score_timeline(wave, score_windows, hop)
        return Timeline(source, wave.shape[0] / SAMPLE_RATE, text.texts, scores, self.frame_rate_hz)

    def detect(
        self,
        audio,
        texts,
        threshold: float = 0.5,
        *,
        median: int = 3,
        sample_rate: int | None = None,
        hop_s: float = 5.0,
        method: str = "unbiased",
    ) -> Detection:
        """Events of each query in a recording of any length (median filter, ``> threshold``)."""
        timeline = self.score(audio, texts, sample_rate=sample_rate, hop_s=hop_s, method=method)
        events = extract_events(
            timeline.scores,
            timeline.texts,
            frame_hop_s=1.0 / timeline.frame_rate_hz,
            duration_s=timeline.duration_s,
            threshold=threshold,
            median=median,
        )
        return Detection(timeline, events)
