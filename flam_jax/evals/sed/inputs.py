"""Inputs shared by the SED metrics: ground-truth events and checks on scores and durations.

Ground truth is a list (one entry per clip) of ``(onset, offset, label)`` tuples; clips
without events count everywhere. Times are rounded to 6 decimals (``timeline.round_time``)
and overlapping or touching events of one label in one clip are merged, because
sed_scores_eval refuses such ground truth while annotations (e.g. AudioSet-strong) have
it. ``EventTable`` holds the merged events as parallel arrays for the vectorised metrics.
This module sits at the bottom of the package: it imports none of the metric modules.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flam_jax.errors import InputError
from flam_jax.timeline import round_time

Event = tuple[float, float, str]


def merge_overlapping(rows: list[tuple]) -> list[tuple]:
    """Merge overlapping or touching events of one (clip, class): rows (clip, class, on, off).

    sed_scores_eval refuses such ground truth; annotations (e.g. AudioSet-strong) have it.
    Times are rounded to ``TIME_DECIMALS`` first. Returns rows sorted by (clip, class, on).
    """
    rows = sorted((c, k, float(round_time(a)), float(round_time(b))) for c, k, a, b in rows)
    merged: list[tuple] = []
    for clip, cls, onset, offset in rows:
        if merged and merged[-1][:2] == (clip, cls) and onset <= merged[-1][3]:
            last = merged[-1]
            merged[-1] = (clip, cls, last[2], max(last[3], offset))
        else:
            merged.append((clip, cls, onset, offset))
    return merged


def merged_event_lists(events: Sequence[Sequence[Event]]) -> list[list[Event]]:
    """Per-clip event lists with overlapping/touching same-label events merged (rounded times)."""
    out = []
    for clip_events in events:
        rows = merge_overlapping([(0, name, on, off) for on, off, name in clip_events])
        out.append(sorted((on, off, name) for _, name, on, off in rows))
    return out


@dataclass(frozen=True)
class EventTable:
    """Ground-truth events as parallel arrays, sorted by (clip, class, onset), overlaps merged."""

    clip: np.ndarray
    cls: np.ndarray
    onset: np.ndarray
    offset: np.ndarray
    num_clips: int
    num_classes: int

    @classmethod
    def from_lists(cls, events: Sequence[Sequence[Event]], class_names: Sequence[str]) -> "EventTable":
        index = {name: i for i, name in enumerate(class_names)}
        rows = []
        for clip, clip_events in enumerate(events):
            for onset, offset, name in clip_events:
                if name not in index:
                    raise InputError(f"event label {name!r} is not one of the {len(class_names)} classes")
                if not offset >= onset:
                    raise InputError(f"event {name!r} in clip {clip} ends ({offset}) before it starts")
                rows.append((clip, index[name], float(onset), float(offset)))
        rows = merge_overlapping(rows)
        arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
        return cls(
            clip=arr[:, 0].astype(np.int64),
            cls=arr[:, 1].astype(np.int64),
            onset=arr[:, 2],
            offset=arr[:, 3],
            num_clips=len(events),
            num_classes=len(class_names),
        )

    def counts(self) -> np.ndarray:
        """Number of events per class."""
        return np.bincount(self.cls, minlength=self.num_classes)

    def durations(self) -> np.ndarray:
        """Summed event duration per class (overlaps counted twice, as sed_scores_eval)."""
        return np.bincount(self.cls, weights=self.offset - self.onset, minlength=self.num_classes)

    def padded(
        self, pair_clip: np.ndarray, pair_cls: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Onsets/offsets [P, E] of the events of each (clip, class) pair, and a valid mask."""
        key = self.clip * self.num_classes + self.cls
        want = pair_clip * self.num_classes + pair_cls
        lo = np.searchsorted(key, want, "left")
        hi = np.searchsorted(key, want, "right")
        width = max(int((hi - lo).max(initial=0)), 1)
        idx = lo[:, None] + np.arange(width)
        valid = idx < hi[:, None]
        idx = np.where(valid, idx, 0)
        if len(key) == 0:
            zeros = np.zeros(idx.shape)
            return zeros, zeros, valid
        return np.where(valid, self.onset[idx], 0.0), np.where(valid, self.offset[idx], 0.0), valid


def _check_scores(scores: np.ndarray, num_classes: int) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 3:
        raise InputError(f"scores must be [clips, queries, frames], got shape {scores.shape}")
    if scores.shape[1] != num_classes:
        raise InputError(f"scores have {scores.shape[1]} queries but there are {num_classes} classes")
    if not np.all(np.isfinite(scores)):
        raise InputError("scores contain NaN or infinity")
    return scores


def _durations(durations, num_clips: int, num_frames: int, hop: float) -> np.ndarray:
    if durations is None:
        return np.full(num_clips, round_time(num_frames * hop))
    durations = np.asarray(durations, dtype=np.float64).reshape(-1)
    if durations.shape != (num_clips,):
        raise InputError(f"{durations.size} durations for {num_clips} clips")
    return durations
