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

**Streams.** ``WindowCutter`` and ``FrameScoreSum`` apply both rules to a recording that
arrives in blocks (a file decoded piece by piece), holding one window of audio, with the
whole-array functions' results.

Also here: the median filter, maximal runs of active frames and their times, and
frame activity (median filter → threshold → gap merging → minimum duration), which the
evaluator, the inference API and the demo share.
"""

from __future__ import annotations

import dataclasses
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


# --------------------------------------------------------------------------- streams
#
# The same two rules for a recording that arrives in blocks (a file decoded piece by piece):
# ``WindowCutter`` cuts the windows as they complete, holding at most one window of audio,
# and ``FrameScoreSum`` averages frame scores as they come. Fed the windows in start order,
# they give what ``window_starts``/``cut_windows``/``average_windows`` and
# ``global_window_starts``/``global_windows`` give on the whole array, bit for bit.


@dataclasses.dataclass(frozen=True)
class Cut:
    """One window cut from a stream; ``samples`` [window] float32 may be a view into the
    cutter's buffer, so read it before the next ``push``."""

    start: int
    samples: np.ndarray
    frame: bool  # one of window_starts: its frame scores go on the timeline
    global_: bool  # one of the windows global_windows averages (a short clip: its repetition)


class WindowCutter:
    """Both rules' windows of a recording pushed block by block, in constant memory.

    ``push(block)`` returns the windows the block completed, ``finish()`` the rest: the
    zero-padded last frame window, the global window that ends at the end, or a short clip
    repeated to one window. Each rule's windows come in start order. Only the last
    ``window`` samples are kept between pushes: every window still to come starts after
    ``num_samples - window``, since all earlier ones are complete and were cut.

    A window that ends exactly where the audio so far ends is held back until more audio
    arrives: only then is it known whether it ends the recording, which would make it the
    last global window as well.
    """

    def __init__(self, hop: int, window: int = WINDOW_SAMPLES, *, frames: bool = True, globals_: bool = True):
        if not 0 < hop <= window:
            raise InputError(f"hop must be 1..{window} samples, got {hop}")
        self.hop, self.window = hop, window
        self.frames, self.globals_ = frames, globals_
        self.num_samples = 0
        self._buffer = np.zeros(0, np.float32)
        self._base = 0  # the recording's sample index of _buffer[0]
        self._next_frame = 0  # next start of window_starts
        self._next_global = 0  # next start on the global grid 0, window, 2·window, …
        self._reached_end = False  # a frame window ending at the end was cut
        self._finished = False

    def push(self, block: np.ndarray) -> list[Cut]:
        if self._finished:
            raise InputError("audio pushed after the stream finished")
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self._buffer = np.concatenate([self._buffer, block]) if self._buffer.size else block
        self.num_samples += block.size
        cuts = self._cut(final=False)
        keep = max(self._base, self.num_samples - self.window)
        self._buffer = self._buffer[keep - self._base :]
        self._base = keep
        return cuts

    def finish(self) -> list[Cut]:
        """The windows that only the end of the recording decides; call once, after the last push."""
        if self._finished:
            raise InputError("the stream finished twice")
        self._finished = True
        n, window = self.num_samples, self.window
        if n == 0:
            raise InputError("empty audio clip")
        cuts = self._cut(final=True)
        tail = n - window
        if self.globals_ and n < window:
            cuts.append(Cut(0, np.resize(self._view(0, n), window), frame=False, global_=True))
        elif self.globals_ and n > window and tail % window and (not self.frames or tail % self.hop):
            # The window that ends at the end, when neither grid put a window there.
            cuts.append(Cut(tail, self._view(tail, n), frame=False, global_=True))
        if self.frames and not self._reached_end:
            # The first window past the end: it starts before the end (hop <= window), zero-padded.
            start = self._next_frame
            padded = np.zeros(window, np.float32)
            padded[: n - start] = self._view(start, n)
            cuts.append(Cut(start, padded, frame=True, global_=False))
        return cuts

    def _view(self, start: int, end: int) -> np.ndarray:
        return self._buffer[start - self._base : end - self._base]

    def _cut(self, final: bool) -> list[Cut]:
        """Every window that has all its samples; while more may come, only those that end
        before the audio so far ends (see the class doc)."""
        cuts, n = [], self.num_samples
        while True:
            frame = self._next_frame if self.frames and not self._reached_end else None
            grid = self._next_global if self.globals_ else None
            start = min(s for s in (frame, grid, n) if s is not None)
            end = start + self.window
            if start == n or end > n or (end == n and not final):
                return cuts
            is_frame, is_grid = start == frame, start == grid
            # A window ending at the end of a recording longer than one window is its last global one.
            last_global = self.globals_ and final and end == n
            cuts.append(Cut(start, self._view(start, end), frame=is_frame, global_=is_grid or last_global))
            if is_frame:
                self._next_frame += self.hop
                self._reached_end = end >= n and final
            if is_grid:
                self._next_global += self.window


class FrameScoreSum:
    """Running sums and counts per timeline frame: ``average_windows`` one window at a time.

    The timeline's length is known only at the end, so the sums grow (doubling) past
    ``capacity`` frames; size it from the expected length to allocate once.
    """

    def __init__(self, num_frames: int, window: int = WINDOW_SAMPLES, *, capacity: int = 0):
        self.num_frames = num_frames
        self.frame = samples_per_frame(num_frames, window)
        self.window = window
        self._capacity = max(int(capacity), num_frames)
        self._total: np.ndarray | None = None
        self._count = np.zeros(self._capacity, dtype=np.int64)

    def add(self, start: int, scores: np.ndarray) -> None:
        """Scores [..., F] of the window at ``start``; add windows in start order, as average_windows does."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape[-1] != self.num_frames:
            raise InputError(f"window scores must have {self.num_frames} frames, got shape {scores.shape}")
        first = start // self.frame
        end = first + self.num_frames
        if self._total is None:
            self._total = np.zeros((*scores.shape[:-1], self._capacity), dtype=np.float64)
        if end > self._capacity:
            self._capacity = max(end, 2 * self._capacity)
            total = np.zeros((*self._total.shape[:-1], self._capacity), dtype=np.float64)
            total[..., : self._total.shape[-1]] = self._total
            self._total = total
            self._count = np.concatenate([self._count, np.zeros(self._capacity - self._count.size, np.int64)])
        self._total[..., first:end] += scores
        self._count[first:end] += 1

    def result(self, num_samples: int) -> np.ndarray:
        """The timeline [..., T] of a recording of ``num_samples``; frames after its end dropped."""
        if self._total is None:
            raise InputError("no window scores to average")
        length = total_frames(num_samples, self.num_frames, self.window)
        return self._total[..., :length] / self._count[:length]


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
