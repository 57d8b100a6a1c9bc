"""Long audio: 10 s windows at a hop, and per-window frame scores averaged onto one timeline.

A recording of S samples is cut into windows of ``window`` samples starting at 0, hop,
2·hop, … until a window reaches the end. The last, partial window is zero-padded to the
full window (never stretched, never shifted), so every window's frame k covers the same
span of time as frame k of a 10 s clip; frames that start after the end of the recording
are dropped. The hop must be a whole number of frames so that every window's frames fall
on one grid; overlapping scores of a frame are averaged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from flam_jax.errors import InputError

WINDOW_SAMPLES = 480_000  # 10 s at 48 kHz: what the audio tower takes


def samples_per_frame(num_frames: int, window: int = WINDOW_SAMPLES) -> int:
    if window % num_frames:
        raise InputError(f"a window of {window} samples does not split into {num_frames} frames")
    return window // num_frames


def hop_samples(hop_s: float, num_frames: int, *, rate: int = 48_000, window: int = WINDOW_SAMPLES) -> int:
    """The hop in samples; it must be a positive whole number of frames and at most one window."""
    frame = samples_per_frame(num_frames, window)
    hop = hop_s * rate
    frames = round(hop / frame)
    if not (hop_s > 0) or abs(frames * frame - hop) > 1e-6 * rate or frames < 1 or frames * frame > window:
        raise InputError(
            f"hop {hop_s} s must be a positive multiple of the {frame / rate:g} s frame and at most "
            f"{window / rate:g} s"
        )
    return frames * frame


def total_frames(num_samples: int, num_frames: int, window: int = WINDOW_SAMPLES) -> int:
    """Frames on the timeline: every frame that starts before the end of the recording."""
    return max(1, math.ceil(num_samples / samples_per_frame(num_frames, window)))


def window_starts(num_samples: int, hop: int, window: int = WINDOW_SAMPLES) -> list[int]:
    """Start samples: 0, hop, … up to the first window that reaches the end."""
    starts = [0]
    while starts[-1] + window < num_samples:
        starts.append(starts[-1] + hop)
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
