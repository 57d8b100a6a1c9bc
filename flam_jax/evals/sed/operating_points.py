"""Exact intersection-based statistics at every detection threshold, the engine of PSDS and F1.

For each class, ``intersection_operating_points`` gives the true positives, false
positives and cross-trigger rate at every distinct score (every operating point, no
threshold grid), as sed_scores_eval's ``intersection_based`` module defines them: a
detection is relevant when enough of it (dtc) overlaps the class's events, an event is
hit when enough of it (gtc) is covered by relevant detections, and an irrelevant
detection cross-triggers another class when enough of it (cttc) overlaps that class.
``psd_roc`` and ``fscore`` read their metrics off the resulting ``OperatingPoints``.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flam_jax.errors import InputError
from flam_jax.evals.sed.inputs import Event, EventTable, _check_scores, _durations
from flam_jax.timeline import FRAME_HOP_S, TIME_DECIMALS, frame_boundaries, runs


def _onset_deltas(scores: np.ndarray) -> np.ndarray:
    """+1 where a run is born (local max), −1 where two runs merge (local min), along frames.

    Equals (s_t > s_{t−1}) − (s_{t+1} > s_t) with s_{−1} = s_F = −∞.
    """
    rises = (scores[..., 1:] > scores[..., :-1]).astype(np.int8)
    out = np.zeros(scores.shape, dtype=np.int8)
    out[..., 0] = 1
    out[..., 1:] = rises
    out[..., :-1] -= rises
    return out


def _pair_deltas(
    scores: np.ndarray,
    target: tuple[np.ndarray, np.ndarray, np.ndarray],
    others: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
    edges: np.ndarray,
    dtc: float,
    gtc: float,
    cttc: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame deltas of (fps, tps, weighted cts) for P (clip, class) pairs, scores [P, F].

    For each pair the detections at threshold τ are the runs of frames with score ≥ τ.
    Statistics are evaluated at every frame's score; the change when the threshold drops
    to a frame's score is stored at that frame, so that summing the deltas of all frames
    with score ≥ τ gives the statistics at τ (Ebbers et al., ICASSP 2022).

    ``target`` = (onsets [P,E], offsets [P,E], valid [P,E]) of the pair's class;
    ``others`` = (onsets [P,O,E'], offsets [P,O,E'], valid, weight [P,O]) of the clip's
    other classes, weight = 1 / ((classes − 1) · their total duration).
    """
    num_pairs, frames = scores.shape
    order = np.argsort(scores, axis=1)  # tied frames share a detection set: any order
    thresholds = np.take_along_axis(scores, order, 1)
    detected = scores[:, None, :] >= thresholds[:, :, None]  # [P, K=F, F]
    row, start, end = runs(detected)
    pair = row // frames
    t_on, t_off = edges[start], edges[end]
    length = t_off - t_on

    on, off, valid = target
    inter = np.maximum(np.minimum(t_off[:, None], off[pair]) - np.maximum(t_on[:, None], on[pair]), 0.0)
    relevant = np.round(inter.sum(1), TIME_DECIMALS) >= np.round(dtc * length, TIME_DECIMALS)
    num_rows = num_pairs * frames
    fps = np.bincount(row, weights=~relevant, minlength=num_rows)

    gt_len = off - on
    tps = np.zeros(num_rows)
    for j in range(on.shape[1]):
        covered = np.bincount(row, weights=inter[:, j] * relevant, minlength=num_rows).reshape(
            num_pairs, frames
        )
        hit = np.round(covered, TIME_DECIMALS) >= np.round(gtc * gt_len[:, j : j + 1], TIME_DECIMALS)
        tps += (hit & valid[:, j : j + 1]).reshape(-1)

    cts = np.zeros(num_rows)
    if cttc is not None and others is not None:
        o_on, o_off, _o_valid, o_weight = others
        crit = np.round(cttc * length, TIME_DECIMALS)
        weight = np.zeros(len(row))
        for o in range(o_on.shape[1]):
            o_inter = np.maximum(
                np.minimum(t_off[:, None], o_off[pair, o]) - np.maximum(t_on[:, None], o_on[pair, o]), 0.0
            )
            cross = (np.round(o_inter.sum(1), TIME_DECIMALS) >= crit) & ~relevant
            weight += cross * o_weight[pair, o]
        cts = np.bincount(row, weights=weight, minlength=num_rows)

    def to_frames(stat: np.ndarray) -> np.ndarray:
        stat = stat.reshape(num_pairs, frames)
        delta = stat - np.concatenate([stat[:, 1:], np.zeros((num_pairs, 1))], 1)
        out = np.empty_like(delta)
        np.put_along_axis(out, order, delta, 1)
        return out

    return to_frames(fps), to_frames(tps), to_frames(cts)


def _dense_ranks(scores: np.ndarray) -> np.ndarray:
    """Per-row dense ranks (ties share a rank) as small integers; same order as ``scores``."""
    order = np.argsort(scores, axis=1)
    ordered = np.take_along_axis(scores, order, 1)
    steps = np.concatenate([np.zeros((len(scores), 1), bool), ordered[:, 1:] != ordered[:, :-1]], 1)
    dtype = np.int8 if scores.shape[1] < 127 else np.int32
    ranks = np.empty(scores.shape, dtype=dtype)
    np.put_along_axis(ranks, order, np.cumsum(steps, axis=1).astype(dtype), 1)
    return ranks


def _cross_trigger_deltas(scores: np.ndarray, others, edges: np.ndarray, cttc: float) -> np.ndarray:
    """Per-frame deltas of the weighted cross-trigger count for pairs whose class has no
    event in the clip (so no detection is relevant), scores [P, F].

    Instead of enumerating the runs at every threshold, it visits each distinct run once:
    frames [a, b) form a run exactly for thresholds τ with max(s[a−1], s[b]) < τ ≤
    min(s[a:b]), so a run's weight enters at its minimum and leaves at its larger border.
    """
    num_pairs, frames = scores.shape
    scores = _dense_ranks(scores)  # only the order matters: small integers are faster
    start = np.arange(frames)[:, None]
    stop = start + np.arange(1, frames + 1)[None, :]  # interval [start, stop), [F, F]
    inside = stop <= frames
    top, bottom = np.iinfo(scores.dtype).max, np.iinfo(scores.dtype).min
    window = np.where(inside[None], scores[:, np.minimum(stop - 1, frames - 1)], top)
    run_min = np.minimum.accumulate(window, axis=2)
    padded = np.pad(scores, ((0, 0), (1, 1)), constant_values=bottom)
    left = padded[:, start[:, 0]]  # s[a − 1]
    right = padded[:, np.minimum(stop, frames) + 1]  # s[b]
    border = np.maximum(left[:, :, None], right)
    pair, a, j = np.nonzero(inside[None] & (run_min > border))
    b = a + j + 1
    t_on, t_off = edges[a], edges[b]
    crit = np.round(cttc * (t_off - t_on), TIME_DECIMALS)
    o_on, o_off, _valid, o_weight = others
    weight = np.zeros(len(pair))
    for o in range(o_on.shape[1]):
        inter = np.maximum(
            np.minimum(t_off[:, None], o_off[pair, o]) - np.maximum(t_on[:, None], o_on[pair, o]), 0.0
        )
        weight += (np.round(inter.sum(1), TIME_DECIMALS) >= crit) * o_weight[pair, o]
    keep = weight != 0
    pair, a, b, weight, border = (
        pair[keep],
        a[keep],
        b[keep],
        weight[keep],
        border[pair[keep], a[keep], j[keep]],
    )
    cols = np.arange(frames)[None, :]
    masked = np.where((cols >= a[:, None]) & (cols < b[:, None]), scores[pair], top)
    out = np.zeros((num_pairs, frames))
    np.add.at(out, (pair, np.argmin(masked, axis=1)), weight)
    dies = border > bottom  # a run over the whole clip never merges into a larger one
    left_wins = padded[pair, a] >= padded[pair, b + 1]
    death = np.where(left_wins, a - 1, b)
    np.add.at(out, (pair[dies], death[dies]), -weight[dies])
    return out


@dataclass(frozen=True)
class OperatingPoints:
    """Per-class statistics at every distinct detection threshold (score ≥ threshold).

    Lists indexed by evaluated class (those with ground-truth events); arrays ascending in
    threshold and ending with the +inf point (nothing detected). ``ct_rate`` is the mean
    cross-trigger rate per second over the other classes (zeros without cttc).
    """

    thresholds: list[np.ndarray]
    tps: list[np.ndarray]
    fps: list[np.ndarray]
    ct_rate: list[np.ndarray]
    n_ref: np.ndarray
    dataset_duration: float
    classes: np.ndarray  # indices (into the caller's class list) of the evaluated classes
    num_classes_total: int

    def expand(self, per_class: np.ndarray) -> np.ndarray:
        """Per-evaluated-class values → all classes (NaN for classes without events)."""
        out = np.full((self.num_classes_total, *per_class.shape[1:]), np.nan)
        out[self.classes] = per_class
        return out


def intersection_operating_points(
    scores: np.ndarray,
    ground_truth: Sequence[Sequence[Event]] | EventTable,
    class_names: Sequence[str],
    *,
    dtc: float,
    gtc: float,
    cttc: float | None = None,
    durations=None,
    hop: float = FRAME_HOP_S,
    pair_chunk: int = 2048,
    class_chunk: int = 32,
) -> OperatingPoints:
    """Exact intersection-based statistics for every threshold (the engine of PSDS and F1)."""
    gt = (
        ground_truth
        if isinstance(ground_truth, EventTable)
        else EventTable.from_lists(ground_truth, class_names)
    )
    scores = _check_scores(scores, len(class_names))
    num_clips, num_classes, frames = scores.shape
    if gt.num_clips != num_clips:
        raise InputError(f"ground truth has {gt.num_clips} clips but scores have {num_clips}")
    durations = _durations(durations, num_clips, frames, hop)
    edges = frame_boundaries(frames, hop)
    # Classes without any ground-truth event are left out, as the DCASE recipes drop them
    # (sed_scores_eval refuses them); this also sets K in the cross-trigger mean.
    classes = np.flatnonzero(gt.counts() > 0)
    remap = np.full(num_classes, -1)
    remap[classes] = np.arange(len(classes))
    gt = EventTable(gt.clip, remap[gt.cls], gt.onset, gt.offset, num_clips, len(classes))
    scores = scores[:, classes, :]
    num_classes = len(classes)
    n_ref = gt.counts()
    t_ref = gt.durations()
    present = np.zeros((num_clips, num_classes), dtype=bool)
    present[gt.clip, gt.cls] = True
    clip_has_gt = present.any(1)
    # Weight of one cross trigger with class o: 1 / ((K−1)·t_ref_o); never-active classes
    # cannot be cross-triggered, so their weight is irrelevant.
    ct_weight = 1.0 / (max(num_classes - 1, 1) * np.maximum(t_ref, 1e-12))

    thresholds, tps_out, fps_out, ct_out = [], [], [], []
    for c0 in range(0, num_classes, class_chunk):
        cls_ids = np.arange(c0, min(c0 + class_chunk, num_classes))
        block = np.ascontiguousarray(scores[:, cls_ids, :].transpose(1, 0, 2), dtype=np.float64)  # [q, N, F]
        d_fps = _onset_deltas(block).astype(np.float64)
        d_tps = np.zeros_like(d_fps)
        d_cts = np.zeros_like(d_fps) if cttc is not None else None
        # Pairs with events of their class need the full threshold × frame analysis.
        pair_j, pair_clip = np.nonzero(present[:, cls_ids].T)
        for p0 in range(0, len(pair_clip), pair_chunk):
            pc, pj = pair_clip[p0 : p0 + pair_chunk], pair_j[p0 : p0 + pair_chunk]
            target = gt.padded(pc, cls_ids[pj])
            others = None
            if cttc is not None:
                others = _other_class_events(gt, present, pc, cls_ids[pj], ct_weight)
            f, t, c = _pair_deltas(block[pj, pc], target, others, edges, dtc, gtc, cttc)
            d_fps[pj, pc], d_tps[pj, pc] = f, t
            if cttc is not None:
                d_cts[pj, pc] = c
        if cttc is not None:
            # Pairs without events of their class in a clip with other events: every
            # detection is a false positive (the onset deltas) and may cross-trigger.
            pair_j, pair_clip = np.nonzero(~present[:, cls_ids].T & clip_has_gt[None, :])
            for p0 in range(0, len(pair_clip), pair_chunk):
                pc, pj = pair_clip[p0 : p0 + pair_chunk], pair_j[p0 : p0 + pair_chunk]
                others = _other_class_events(gt, present, pc, cls_ids[pj], ct_weight)
                d_cts[pj, pc] = _cross_trigger_deltas(block[pj, pc], others, edges, cttc)
        # Statistics at τ = sum of the deltas of all frames with score ≥ τ: sort each
        # class's scores once, take reverse cumulative sums, read them at tie-group starts.
        rows = block.reshape(len(cls_ids), -1)
        order = np.argsort(rows, axis=1)
        s_sorted = np.take_along_axis(rows, order, 1)
        group_start = np.ones(s_sorted.shape, dtype=bool)
        group_start[:, 1:] = s_sorted[:, 1:] != s_sorted[:, :-1]
        stats = []
        for d in (d_tps, d_fps, d_cts) if cttc is not None else (d_tps, d_fps):
            d_rows = np.take_along_axis(d.reshape(len(cls_ids), -1), order, 1)
            stats.append(np.cumsum(d_rows[:, ::-1], axis=1)[:, ::-1])
        for j in range(len(cls_ids)):
            at = group_start[j]
            thresholds.append(np.r_[s_sorted[j, at], np.inf])
            tps_out.append(np.r_[np.round(stats[0][j, at]), 0.0])
            fps_out.append(np.r_[np.round(stats[1][j, at]), 0.0])
            ct_out.append(np.r_[stats[2][j, at], 0.0] if cttc is not None else np.zeros(at.sum() + 1))
    return OperatingPoints(
        thresholds, tps_out, fps_out, ct_out, n_ref, float(durations.sum()), classes, len(class_names)
    )


def _other_class_events(gt: EventTable, present, pair_clip, pair_cls, ct_weight):
    """Events of each pair's clip grouped by the other classes active in it (padded).

    A clip's slot holding the pair's own class is kept but masked out (weight 0).
    """
    num_pairs = len(pair_clip)
    rows = present[pair_clip]  # [P, classes]
    width = max(int(rows.sum(1).max(initial=0)), 1)
    # Active classes of each row first (stable), then the first ``width`` columns.
    order = np.argsort(~rows, axis=1, kind="stable")[:, :width]
    has = np.take_along_axis(rows, order, 1) & (order != pair_cls[:, None])
    on, off, valid = gt.padded(np.repeat(pair_clip, width), order.reshape(-1))
    on = on.reshape(num_pairs, width, -1)
    off = off.reshape(num_pairs, width, -1)
    valid = valid.reshape(num_pairs, width, -1) & has[:, :, None]
    on, off = np.where(valid, on, 0.0), np.where(valid, off, 0.0)
    weight = np.where(has, ct_weight[order], 0.0)
    return on, off, valid, weight
