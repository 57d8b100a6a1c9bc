"""Timeline frame scores → events with a peak score (``timeline.activity``: median filter, threshold)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flam_jax.timeline import activity, round_time, runs


@dataclasses.dataclass(frozen=True)
class Event:
    query: str
    onset: float  # seconds
    offset: float  # seconds, at most the duration of the recording
    score: float  # peak raw frame score inside the event


def extract_events(
    scores: np.ndarray,
    queries: Sequence[str],
    *,
    frame_hop_s: float,
    duration_s: float,
    threshold: float = 0.5,
    median: int = 3,
) -> list[list[Event]]:
    """Events per query from scores [N, T]: median filter, ``> threshold``, maximal runs.

    The peak is taken from the unfiltered scores over the event's frames, so it says how
    sure the model was at its most confident moment; the last event ends at the recording's end.
    """
    scores = np.asarray(scores, dtype=np.float64)
    active = activity(scores, threshold, filter_size=median, hop=frame_hop_s)
    out: list[list[Event]] = [[] for _ in queries]
    row, start, end = runs(active)
    for r, a, b in zip(row.tolist(), start.tolist(), end.tolist(), strict=True):
        onset = float(round_time(a * frame_hop_s))
        offset = float(round_time(min(b * frame_hop_s, duration_s)))
        out[r].append(Event(queries[r], onset, offset, float(scores[r, a:b].max())))
    return out
