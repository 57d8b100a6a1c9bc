"""Frame scores → sound events, and events → frame labels, on FLAM's frame grid.

The grid, the median filter and frame activity are ``flam_jax.timeline``'s. Order of
operations in ``scores_to_events``: median filter → threshold (strictly greater, as
``sed_scores_eval.scores_to_event_list``) → merge gaps ≤ ``max_gap`` → drop events
shorter than ``min_duration``. Event times are rounded as ``timeline.round_time``.
"""

from collections.abc import Sequence

import numpy as np

from flam_jax.errors import InputError
from flam_jax.timeline import FRAME_HOP_S, activity, frame_boundaries, round_time, run_times

Event = tuple[float, float, str]


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
    clips, queries, _ = scores.shape
    if len(class_names) != queries:
        raise InputError(f"{len(class_names)} class names for {queries} queries")
    active = activity(
        scores, threshold, filter_size=filter_size, max_gap=max_gap, min_duration=min_duration, hop=hop
    )
    events: list[list[Event]] = [[] for _ in range(clips)]
    for r, onset, offset in run_times(active, hop):
        events[r // queries].append((onset, offset, class_names[r % queries]))
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
