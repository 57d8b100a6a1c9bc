"""Event-based (collar) and segment-based F1 on event lists, as sed_eval computes them.

Inputs are per-clip lists of ``(onset, offset, label)``; every clip of the evaluation set
must be passed (clips without events included), in the same order for estimate and
reference. Same-label reference (and estimated) events that overlap or touch are merged
first, and times are rounded to 6 decimals; collar comparisons are made on rounded
differences, so a difference of exactly 200 ms is a hit whatever its float spelling.

Results: ``micro`` (sed_eval "overall": counts pooled over classes), ``macro`` (sed_eval
"class-wise average": NaN-mean of per-class F1, so classes without reference events and
without estimates drop out), ``per_class``, plus precision and recall.
"""

from collections.abc import Sequence

import numpy as np

from flam_jax.errors import InputError
from flam_jax.evals.sed import Event, merged_event_lists
from flam_jax.timeline import TIME_DECIMALS


def _f_measure(ntp, nsys, nref) -> tuple[float, float, float]:
    """sed_eval's precision/recall/F: NaN when a denominator is zero, F = 0 when both are 0."""
    precision = float("nan") if nsys == 0 else float(ntp / nsys)
    recall = float("nan") if nref == 0 else float(ntp / nref)
    if precision == 0 and recall == 0:
        return 0.0, precision, recall
    return 2 * precision * recall / (precision + recall), precision, recall


def _summary(ntp: np.ndarray, nsys: np.ndarray, nref: np.ndarray) -> dict:
    per_class = [_f_measure(t, s, r) for t, s, r in zip(ntp, nsys, nref, strict=True)]
    f, p, r = (
        (np.array(v, dtype=np.float64) for v in zip(*per_class, strict=True)) if per_class else ([],) * 3
    )
    micro_f, micro_p, micro_r = _f_measure(ntp.sum(), nsys.sum(), nref.sum())

    def nanmean(x):
        x = np.asarray(x, dtype=np.float64)
        return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")

    return {
        "micro": micro_f,
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "macro": nanmean(f),
        "macro_precision": nanmean(p),
        "macro_recall": nanmean(r),
        "per_class": np.asarray(f, dtype=np.float64),
    }


def _check_pairs(estimated, reference):
    if len(estimated) != len(reference):
        raise InputError(f"{len(estimated)} estimated clips but {len(reference)} reference clips")


def _max_matching(hits: np.ndarray) -> int:
    """Size of a maximum bipartite matching (rows = references, columns = estimates)."""
    match_of_est = -np.ones(hits.shape[1], dtype=np.int64)

    def augment(ref: int, seen: np.ndarray) -> bool:
        for est in np.flatnonzero(hits[ref]):
            if seen[est]:
                continue
            seen[est] = True
            if match_of_est[est] < 0 or augment(match_of_est[est], seen):
                match_of_est[est] = ref
                return True
        return False

    return sum(augment(ref, np.zeros(hits.shape[1], dtype=bool)) for ref in range(hits.shape[0]))


def event_f1(
    estimated: Sequence[Sequence[Event]],
    reference: Sequence[Sequence[Event]],
    class_names: Sequence[str],
    *,
    t_collar: float = 0.2,
    percentage_of_length: float = 0.2,
    evaluate_offset: bool = True,
) -> dict:
    """Event-based F1 (onset within ``t_collar``; offset within max(collar, pct·length))."""
    _check_pairs(estimated, reference)
    index = {name: i for i, name in enumerate(class_names)}
    num = len(class_names)
    ntp, nsys, nref = np.zeros(num), np.zeros(num), np.zeros(num)
    for est_clip, ref_clip in zip(merged_event_lists(estimated), merged_event_lists(reference), strict=True):
        for name in {e[2] for e in est_clip} | {e[2] for e in ref_clip}:
            if name not in index:
                raise InputError(f"event label {name!r} is not one of the {num} classes")
            c = index[name]
            est = np.array([(a, b) for a, b, n in est_clip if n == name], dtype=np.float64).reshape(-1, 2)
            ref = np.array([(a, b) for a, b, n in ref_clip if n == name], dtype=np.float64).reshape(-1, 2)
            nsys[c] += len(est)
            nref[c] += len(ref)
            if len(est) == 0 or len(ref) == 0:
                continue
            onset_gap = np.round(np.abs(ref[:, None, 0] - est[None, :, 0]), TIME_DECIMALS)
            hits = onset_gap <= t_collar
            if evaluate_offset:
                offset_gap = np.round(np.abs(ref[:, None, 1] - est[None, :, 1]), TIME_DECIMALS)
                tolerance = np.round(
                    np.maximum(t_collar, percentage_of_length * (ref[:, 1] - ref[:, 0])), TIME_DECIMALS
                )
                hits &= offset_gap <= tolerance[:, None]
            ntp[c] += _max_matching(hits)
    return _summary(ntp, nsys, nref)


def _segment_roll(events, index, num_classes, num_segments, segment_length) -> np.ndarray:
    roll = np.zeros((num_classes, num_segments), dtype=bool)
    for onset, offset, name in events:
        if name not in index:
            raise InputError(f"event label {name!r} is not one of the {num_classes} classes")
        # sed_eval's event roll: segments floor(onset/len) … ceil(offset/len) − 1.
        first = int(np.floor(onset / segment_length))
        stop = int(np.ceil(offset / segment_length))
        roll[index[name], max(first, 0) : min(stop, num_segments)] = True
    return roll


def segment_f1(
    estimated: Sequence[Sequence[Event]],
    reference: Sequence[Sequence[Event]],
    class_names: Sequence[str],
    durations: Sequence[float],
    *,
    segment_length: float = 1.0,
) -> dict:
    """Segment-based F1: a class is active in a segment if any of its events overlaps it."""
    _check_pairs(estimated, reference)
    if len(durations) != len(reference):
        raise InputError(f"{len(durations)} durations for {len(reference)} clips")
    index = {name: i for i, name in enumerate(class_names)}
    num = len(class_names)
    ntp, nsys, nref = np.zeros(num), np.zeros(num), np.zeros(num)
    for est_clip, ref_clip, duration in zip(
        merged_event_lists(estimated), merged_event_lists(reference), durations, strict=True
    ):
        num_segments = int(np.ceil(duration / segment_length))
        est = _segment_roll(est_clip, index, num, num_segments, segment_length)
        ref = _segment_roll(ref_clip, index, num, num_segments, segment_length)
        ntp += (est & ref).sum(1)
        nsys += est.sum(1)
        nref += ref.sum(1)
    return _summary(ntp, nsys, nref)
