"""FLAM's time axis: 48 kHz audio, 10 s windows, the frame grid, and recordings of any length.

Everything that turns seconds into samples, windows or frames lives here, so that the
trainer, the evaluator, the inference API, the search index and the demo use one grid.

**The grid.** The audio tower takes one window of ``WINDOW_SAMPLES`` (10 s at 48 kHz) and
returns ``num_frames`` frames (32 for every released size): frame k covers
[k, k + 1) · ``FRAME_HOP_S`` seconds (0.3125 s, spec §7). Times are rounded to
``TIME_DECIMALS`` decimals so that a boundary computed two ways (1.0 and 0.3125 · 3.2)
compares equal at collar and segment edges.

**Recordings of any length** follow one of two rules, one per kind of output:

- *Frame scores* (``FLAM.score``/``detect``, flam-search's timelines, SED evaluation):
  windows start at 0, hop, 2·hop, … until one reaches the end; the last one is
  zero-padded, never stretched or shifted, so frame k of every window lies on the
  recording's grid; frames that start after the end are dropped and overlapping frames
  averaged. The hop is a whole number of frames. (The SED evaluator also drops a last
  window with at most ``min_tail`` samples of audio: a 0.2 s tail scored as a 10 s clip
  only adds silence to the metrics.)
- *Global embeddings* (``FLAM.embed_windows().global_``, flam-search's ranking,
  flam-evaluate's retrieval and zero-shot): the clip as training presents a global pair
  (``data.batches.crop_or_loop``): a recording of at most 10 s is repeated end to end to
  10 s; a longer one is covered by full 10 s windows every 10 s, the last one ending at
  the recording's end; the embedding is the mean direction of the windows' embeddings.
  Every window is then one the model was trained on; zero-padded windows would average
  silence into the embedding, and a stretched one is sped up.

Also here: the median filter, maximal runs of active frames and their times, and
frame activity (median filter → threshold → gap merging → minimum duration), which the
evaluator, the inference API and the demo share.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from flam_jax.errors import InputError

SAMPLE_RATE = 48_000
WINDOW_S = 10.0
WINDOW_SAMPLES = 480_000  # WINDOW_S at SAMPLE_RATE: what the audio tower takes
NUM_FRAMES = 32  # frames per window of every released model size
FRAME_HOP_S = WINDOW_S / NUM_FRAMES  # 0.3125 s
TIME_DECIMALS = 6


def round_time(t):
    """Round times (scalar or array) to ``TIME_DECIMALS`` decimals."""
    return np.round(t, TIME_DECIMALS)


def frame_boundaries(num_frames: int, hop: float = FRAME_HOP_S) -> np.ndarray:
    """The ``num_frames + 1`` frame edges in seconds: 0, hop, …, num_frames·hop."""
    return round_time(np.arange(num_frames + 1, dtype=np.float64) * hop)


def frame_rate_hz(num_frames: int = NUM_FRAMES) -> float:
    return num_frames / WINDOW_S


# --------------------------------------------------------------------------- frame windows


def samples_per_frame(num_frames: int, window: int = WINDOW_SAMPLES) -> int:
    if window % num_frames:
        raise InputError(f"a window of {window} samples does not split into {num_frames} frames")
    return window // num_frames


def hop_samples(hop_s: float, num_frames: int, *, window: int = WINDOW_SAMPLES) -> int:
    """The hop in samples; it must be a positive whole number of frames and at most one window."""
    frame = samples_per_frame(num_frames, window)
    hop = hop_s * SAMPLE_RATE
    frames = round(hop / frame)
    if (
        not (hop_s > 0)
        or abs(frames * frame - hop) > 1e-6 * SAMPLE_RATE
        or frames < 1
        or frames * frame > window
    ):
        raise InputError(
            f"hop {hop_s} s must be a positive multiple of the {frame / SAMPLE_RATE:g} s frame and at "
            f"most {window / SAMPLE_RATE:g} s"
        )
    return frames * frame


def total_frames(num_samples: int, num_frames: int, window: int = WINDOW_SAMPLES) -> int:
    """Frames on the timeline: every frame that starts before the end of the recording."""
    return max(1, math.ceil(num_samples / samples_per_frame(num_frames, window)))


def window_starts(
    num_samples: int, hop: int, window: int = WINDOW_SAMPLES, *, min_tail: int = 0
) -> list[int]:
    """Start samples 0, hop, … up to the first window that reaches the end; a last window
    holding at most ``min_tail`` samples of audio is dropped (never the first)."""
    starts = [0]
    while starts[-1] + window < num_samples:
        starts.append(starts[-1] + hop)
    if len(starts) > 1 and num_samples - starts[-1] <= min_tail:
        starts.pop()
    return starts


def cut_windows(wave: np.ndarray, starts: list[int], window: int = WINDOW_SAMPLES) -> np.ndarray:
    """[W, window] float32; the tail of the last window is zeros."""
    out = np.zeros((len(starts), window), dtype=np.float32)
    for i, start in enumerate(starts):
        piece = wave[start : start + window]
        out[i, : piece.shape[0]] = piece
    return out


def average_windows(
    window_scores: np.ndarray, starts: list[int], num_samples: int, window: int = WINDOW_SAMPLES
) -> np.ndarray:
    """Per-window scores [W, ..., F] → timeline [..., T]: the mean over the windows covering each frame."""
    window_scores = np.asarray(window_scores, dtype=np.float64)
    num_frames = window_scores.shape[-1]
    frame = samples_per_frame(num_frames, window)
    length = total_frames(num_samples, num_frames, window)
    total = np.zeros((*window_scores.shape[1:-1], length), dtype=np.float64)
    count = np.zeros(length, dtype=np.int64)
    for scores, start in zip(window_scores, starts, strict=True):
        first = start // frame
        take = min(num_frames, length - first)
        if take <= 0:
            continue
        total[..., first : first + take] += scores[..., :take]
        count[first : first + take] += 1
    return total / count


def score_timeline(
    wave: np.ndarray,
    score_windows: Callable[[np.ndarray], np.ndarray],
    hop: int,
    window: int = WINDOW_SAMPLES,
) -> np.ndarray:
    """Frame scores [..., T] of a recording of any length.

    ``score_windows([W, window]) -> [W, ..., F]`` scores whole windows (a model, or a fake
    in tests).
    """
    wave = np.asarray(wave, dtype=np.float32)
    starts = window_starts(wave.shape[0], hop, window)
    scores = score_windows(cut_windows(wave, starts, window))
    return average_windows(scores, starts, wave.shape[0], window)


def events_in_window(events, start_s: float, length_s: float = WINDOW_S) -> list[tuple[float, float, str]]:
    """(onset, offset, label) events cut at the edges of the window [start_s, start_s + length_s)
    and shifted to start at 0."""
    lo, hi = start_s, start_s + length_s
    out = []
    for onset, offset, label in events:
        a, b = max(onset, lo) - lo, min(offset, hi) - lo
        if b > a:
            out.append((round(float(a), TIME_DECIMALS), round(float(b), TIME_DECIMALS), label))
    return out


# --------------------------------------------------------------------------- global windows


def global_window_starts(num_samples: int, window: int = WINDOW_SAMPLES) -> list[int]:
    """Starts of the full windows a global embedding averages (see the module doc)."""
    if num_samples <= window:
        return [0]
    return [*range(0, num_samples - window, window), num_samples - window]


def global_windows(wave: np.ndarray, window: int = WINDOW_SAMPLES) -> np.ndarray:
    """[W, window] float32: a short clip repeated to one window, or full windows of a long one."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.shape[0] == 0:
        raise InputError("empty audio clip")
    if wave.shape[0] <= window:
        return np.resize(wave, window)[None]  # np.resize repeats the clip end to end
    return np.stack([wave[s : s + window] for s in global_window_starts(wave.shape[0], window)])


def mean_direction(embeddings: np.ndarray) -> np.ndarray:
    """The unit-norm mean of unit-norm embeddings [W, D] → [D] (float64)."""
    total = np.asarray(embeddings, dtype=np.float64).sum(0)
    return total / max(np.linalg.norm(total), 1e-12)


# --------------------------------------------------------------------------- frame activity


def median_filter(scores: np.ndarray, size: int = 3) -> np.ndarray:
    """Median over ``size`` frames along the last axis, edges as scipy's ``mode='reflect'``.

    scipy's "reflect" (d c b a | a b c d | d c b a) repeats the edge value, which is
    numpy's ``'symmetric'`` padding. ``size`` must be odd; 1 returns the input.
    """
    scores = np.asarray(scores)
    if size < 1 or size % 2 == 0:
        raise InputError(f"median filter size must be a positive odd integer, got {size}")
    if size == 1 or scores.shape[-1] == 0:
        return scores
    half = size // 2
    pad = [(0, 0)] * (scores.ndim - 1) + [(half, half)]
    padded = np.pad(scores, pad, mode="symmetric")
    if size == 3:  # the default: median of three without materialising the windows
        a, b, c = padded[..., :-2], padded[..., 1:-1], padded[..., 2:]
        return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
    windows = np.lib.stride_tricks.sliding_window_view(padded, size, axis=-1)
    return np.median(windows, axis=-1).astype(scores.dtype, copy=False)


def runs(active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of True along the last axis of a boolean array.

    Returns (row, start, end): ``row`` indexes the flattened leading axes, each run covers
    frames [start, end). Runs come ordered by row, then by start.
    """
    active = np.asarray(active, dtype=bool)
    frames = active.shape[-1]
    flat = active.reshape(-1, frames)
    edges = np.diff(np.pad(flat, ((0, 0), (1, 1))).astype(np.int8), axis=-1)
    row, start = np.nonzero(edges == 1)
    _, end = np.nonzero(edges == -1)
    return row, start, end


def run_times(active: np.ndarray, hop: float = FRAME_HOP_S) -> list[tuple[int, float, float]]:
    """(row, onset s, offset s) of every maximal run (``runs``), times on the frame grid."""
    active = np.asarray(active, dtype=bool)
    edges = frame_boundaries(active.shape[-1], hop)
    row, start, end = runs(active)
    return [
        (r, float(edges[a]), float(edges[b]))
        for r, a, b in zip(row.tolist(), start.tolist(), end.tolist(), strict=True)
    ]


def merge_gaps(active: np.ndarray, max_gap_frames: int) -> np.ndarray:
    """Fill inactive stretches of at most ``max_gap_frames`` frames between two active runs."""
    active = np.asarray(active, dtype=bool)
    if max_gap_frames <= 0:
        return active
    gaps = ~active
    row, start, end = runs(gaps)
    frames = active.shape[-1]
    inner = (start > 0) & (end < frames) & (end - start <= max_gap_frames)
    out = active.reshape(-1, frames).copy()
    for r, a, b in zip(row[inner], start[inner], end[inner], strict=True):
        out[r, a:b] = True
    return out.reshape(active.shape)


def activity(
    scores: np.ndarray,
    threshold: float | np.ndarray = 0.5,
    *,
    filter_size: int = 3,
    max_gap: float = 0.0,
    min_duration: float = 0.0,
    hop: float = FRAME_HOP_S,
) -> np.ndarray:
    """Boolean frame activity after median filter, threshold (strictly greater), gap merging
    and minimum duration.

    ``threshold`` is a scalar or broadcasts against ``scores[..., 0]`` (e.g. per query).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim < 1:
        raise InputError("scores must have a frame axis")
    smoothed = median_filter(scores, filter_size)
    thr = np.asarray(threshold, dtype=np.float64)[..., None]
    active = smoothed > thr
    # Durations are whole frames; the small epsilon keeps e.g. 0.625 s = 2 frames exact.
    active = merge_gaps(active, int(np.floor(max_gap / hop + 1e-9)))
    if min_duration > 0:
        min_frames = int(np.ceil(min_duration / hop - 1e-9))
        row, start, end = runs(active)
        short = end - start < min_frames
        flat = active.reshape(-1, active.shape[-1]).copy()
        for r, a, b in zip(row[short], start[short], end[short], strict=True):
            flat[r, a:b] = False
        active = flat.reshape(active.shape)
    return active
