"""Frame scores → sound events, and events → frame labels, on FLAM's 0.3125 s grid.

Frame k covers [0.3125·k, 0.3125·(k+1)) s (spec §7). Every time this module returns is
rounded to ``TIME_DECIMALS`` decimals so that a boundary computed two ways (e.g. 1.0 and
0.3125·3.2) compares equal at collar and segment boundaries.

Order of operations in ``scores_to_events``: median filter → threshold (strictly greater,
as ``sed_scores_eval.scores_to_event_list``) → merge gaps ≤ ``max_gap`` → drop events
shorter than ``min_duration``.
"""

from collections.abc import Sequence

import numpy as np

from flam_jax.errors import InputError

FRAME_HOP_S = 0.3125
TIME_DECIMALS = 6

Event = tuple[float, float, str]


def round_time(t):
    """Round times (scalar or array) to ``TIME_DECIMALS`` decimals."""
    return np.round(t, TIME_DECIMALS)


def frame_boundaries(num_frames: int, hop: float = FRAME_HOP_S) -> np.ndarray:
    """The ``num_frames + 1`` frame edges in seconds: 0, hop, …, num_frames·hop."""
    return round_time(np.arange(num_frames + 1, dtype=np.float64) * hop)


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
    """Boolean frame activity after median filter, threshold, gap merging and min duration.

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


def scores_to_events(
    scores: np.ndarray,
    class_names: Sequence[str],
    threshold: float | np.ndarray = 0.5,
    *,
    filter_size: int = 3,
    max_gap: float = 0.0,
    min_duration: float = 0.0,
    hop: float = FRAME_HOP_S,
) -> list[list[Event]]:
    """Events per clip from scores [clips, queries, frames]: ``[[(onset, offset, name), …], …]``.

    Each clip's events are sorted by (onset, offset, name).
    """
    scores = np.asarray(scores)
    if scores.ndim != 3:
        raise InputError(f"scores must be [clips, queries, frames], got shape {scores.shape}")
    clips, queries, frames = scores.shape
    if len(class_names) != queries:
        raise InputError(f"{len(class_names)} class names for {queries} queries")
    active = activity(
        scores, threshold, filter_size=filter_size, max_gap=max_gap, min_duration=min_duration, hop=hop
    )
    row, start, end = runs(active)
    edges = frame_boundaries(frames, hop)
    events: list[list[Event]] = [[] for _ in range(clips)]
    for r, a, b in zip(row.tolist(), start.tolist(), end.tolist(), strict=True):
        events[r // queries].append((float(edges[a]), float(edges[b]), class_names[r % queries]))
    for clip_events in events:
        clip_events.sort()
    return events


def events_to_frame_labels(
    events: Sequence[Sequence[Event]],
    class_names: Sequence[str],
    num_frames: int,
    *,
    hop: float = FRAME_HOP_S,
) -> np.ndarray:
    """Frame labels [clips, classes, frames] uint8: a frame is positive if an event overlaps it.

    "Overlaps" is strict (an event ending exactly on a frame edge does not touch the next
    frame), the rule ``sed_scores_eval`` uses for segments. Unknown labels raise.
    """
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.zeros((len(events), len(class_names), num_frames), dtype=np.uint8)
    edges = frame_boundaries(num_frames, hop)
    for clip, clip_events in enumerate(events):
        for onset, offset, name in clip_events:
            if name not in index:
                raise InputError(f"event label {name!r} is not one of the {len(class_names)} classes")
            on, off = round_time(onset), round_time(offset)
            hit = (edges[:-1] < off) & (edges[1:] > on)
            labels[clip, index[name], hit] = 1
    return labels
