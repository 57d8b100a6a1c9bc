"""Sound event detection metrics on frame scores [clips, queries, frames], in vectorised numpy.

Each metric reproduces a community toolkit (the tests use the toolkits as oracles):

- ``frame_auroc``: sklearn ``roc_auc_score`` on frame labels (ties count one half);
  micro = all (clip, query, frame) pooled, macro = mean over queries that have both
  positive and negative frames.
- ``psds`` / ``psds1`` / ``psds2``: sed_scores_eval ``intersection_based.psds``, exact
  (every operating point, no threshold grid).
- ``intersection_f1`` and ``intersection_f1_curve``: sed_scores_eval
  ``intersection_based.fscore`` (detections are scores strictly above the threshold).
- ``segment_auroc`` / ``mpauc``: sed_scores_eval ``segment_based.auroc`` (staircase ROC,
  a segment's score is the max over the frames it overlaps); MPAUC is the DCASE 2024
  task 4 MAESTRO metric: 1 s segments, max_fpr 0.1, mean over classes.
- ``event_f1`` / ``segment_f1``: sed_eval ``EventBasedMetrics`` (optimal matching,
  200 ms collar, 20 % of length) and ``SegmentBasedMetrics`` (1 s) on event lists.

Ground truth is a list (one entry per clip) of ``(onset, offset, label)`` tuples; clips
without events count everywhere. Times are rounded to 6 decimals (``postprocess``).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flam_jax.errors import InputError
from flam_jax.evals.postprocess import FRAME_HOP_S, TIME_DECIMALS, frame_boundaries, round_time, runs

Event = tuple[float, float, str]
SECONDS_PER_HOUR = 3600.0


# --------------------------------------------------------------------------- inputs


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


# --------------------------------------------------------------------------- frame AUROC


def _auc_from_sorted(all_sorted: np.ndarray, pos_sorted: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties one half) from all scores and positive scores, both sorted."""
    n_pos = pos_sorted.size
    n_neg = all_sorted.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    below_all = np.searchsorted(all_sorted, pos_sorted, "left")
    upto_all = np.searchsorted(all_sorted, pos_sorted, "right")
    below_pos = np.searchsorted(pos_sorted, pos_sorted, "left")
    upto_pos = np.searchsorted(pos_sorted, pos_sorted, "right")
    neg_below = below_all - below_pos
    neg_tied = (upto_all - below_all) - (upto_pos - below_pos)
    wins = neg_below.sum(dtype=np.float64) + 0.5 * neg_tied.sum(dtype=np.float64)
    return float(wins / (float(n_pos) * float(n_neg)))


def frame_auroc(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Frame AUROC: ``micro`` (pooled), ``macro`` (mean over eligible queries), ``per_query``.

    ``labels`` has the shape of ``scores`` ([clips, queries, frames], {0,1}). A query with
    only positive or only negative frames gets NaN and is left out of the macro mean.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 3:
        raise InputError(
            f"scores {scores.shape} and labels {labels.shape} must both be [clips, queries, frames]"
        )
    micro = _auc_from_sorted(np.sort(scores, axis=None), np.sort(scores[labels]))
    by_query = np.moveaxis(scores, 1, 0).reshape(scores.shape[1], -1)
    lab_query = np.moveaxis(labels, 1, 0).reshape(scores.shape[1], -1)
    sorted_query = np.sort(by_query, axis=1)
    per_query = np.array(
        [
            _auc_from_sorted(sorted_query[q], np.sort(by_query[q][lab_query[q]]))
            for q in range(by_query.shape[0])
        ]
    )
    eligible = ~np.isnan(per_query)
    macro = float(per_query[eligible].mean()) if eligible.any() else float("nan")
    return {
        "micro": micro,
        "macro": macro,
        "per_query": per_query,
        "num_eligible_queries": int(eligible.sum()),
    }


def roc_curve(
    scores: np.ndarray, labels: np.ndarray, bins: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled frame ROC (fpr, tpr, thresholds), thresholds descending, for plots.

    Exact (every distinct score) by default; with ``bins`` the thresholds are ``bins``
    equal steps over the score range, linear in time and memory for large sets.
    """
    s = np.asarray(scores).reshape(-1)
    y = np.asarray(labels).astype(bool).reshape(-1)
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    if bins is not None:
        edges = np.linspace(float(s.min()), float(s.max()), bins + 1)
        pos = np.histogram(s[y], edges)[0][::-1].cumsum()
        neg = np.histogram(s[~y], edges)[0][::-1].cumsum()
        return np.r_[0.0, neg / n_neg], np.r_[0.0, pos / n_pos], np.r_[np.inf, edges[:-1][::-1]]
    order = np.argsort(-s.astype(np.float64), kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tpr = np.r_[0.0, np.cumsum(y)[last] / n_pos]
    fpr = np.r_[0.0, np.cumsum(~y)[last] / n_neg]
    return fpr, tpr, np.r_[np.inf, s[last]]


def frame_f1_curve(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> dict:
    """Frame-level F1 at each threshold (active = score > threshold): pooled and per-query mean.

    This is the calibration curve (paper Fig. 3): a calibrated model peaks near 0.5.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    thresholds = np.asarray(thresholds, dtype=np.float64)

    def f1_at(pos_sorted, neg_sorted):
        tp = pos_sorted.size - np.searchsorted(pos_sorted, thresholds, "right")
        fp = neg_sorted.size - np.searchsorted(neg_sorted, thresholds, "right")
        fn = pos_sorted.size - tp
        return 2 * tp / np.maximum(2 * tp + fp + fn, 1)

    micro = f1_at(np.sort(scores[labels]), np.sort(scores[~labels]))
    per_query = np.stack(
        [
            f1_at(np.sort(scores[:, q][labels[:, q]]), np.sort(scores[:, q][~labels[:, q]]))
            for q in range(scores.shape[1])
            if labels[:, q].any()
        ]
        or [np.full(thresholds.shape, np.nan)]
    )
    return {"thresholds": thresholds, "micro": micro, "macro": per_query.mean(0)}


# --------------------------------------------------------------------------- intersection-based


@dataclass(frozen=True)
class PSDSParams:
    """DCASE PSDS parameters (eFPR per hour)."""

    dtc: float
    gtc: float
    cttc: float | None = None
    alpha_ct: float = 0.0
    alpha_st: float = 0.0
    max_efpr: float = 100.0


PSDS1 = PSDSParams(dtc=0.7, gtc=0.7, cttc=None, alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0)
PSDS2 = PSDSParams(dtc=0.1, gtc=0.1, cttc=0.3, alpha_ct=0.5, alpha_st=1.0, max_efpr=100.0)


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


def _class_roc(points: OperatingPoints, c: int, alpha_ct: float, max_efpr: float):
    """Upper envelope of one class's (eFPR, TPR) points with eFPR ≤ max_efpr, sorted by eFPR."""
    tpr = points.tps[c] / max(int(points.n_ref[c]), 1)
    efpr = (points.fps[c] / points.dataset_duration + alpha_ct * points.ct_rate[c]) * SECONDS_PER_HOUR
    keep = efpr <= max_efpr
    efpr, tpr = efpr[keep], tpr[keep]
    order = np.lexsort((tpr, efpr))
    efpr, tpr = efpr[order], np.maximum.accumulate(tpr[order])
    return efpr, tpr


def psds_from_points(points: OperatingPoints, params: PSDSParams) -> dict:
    """PSDS (area under the mean − α_st·std per-class PSD-ROC up to max_efpr, normalised)."""
    if not points.tps:
        raise InputError("PSDS needs at least one class with ground-truth events")
    curves = [_class_roc(points, c, params.alpha_ct, params.max_efpr) for c in range(len(points.tps))]
    grid = np.unique(np.concatenate([e for e, _ in curves]))
    per_class_tpr = np.stack([t[np.searchsorted(e, grid, "right") - 1] for e, t in curves])
    # Every curve starts at (0, 0): the +inf threshold point is always kept.
    etpr = np.maximum(per_class_tpr.mean(0) - params.alpha_st * per_class_tpr.std(0), 0.0)
    widths = np.diff(np.r_[grid, params.max_efpr])
    value = float(np.sum(etpr * widths) / params.max_efpr)
    per_class = []
    for e, t in curves:
        w = np.diff(np.r_[e, params.max_efpr])
        per_class.append(float(np.sum(t * w) / params.max_efpr))
    return {
        "psds": value,
        "per_class": points.expand(np.array(per_class)),
        "efpr": np.r_[grid, params.max_efpr],
        "etpr": np.r_[etpr, etpr[-1]],
    }


def psds(
    scores: np.ndarray,
    ground_truth,
    class_names: Sequence[str],
    params: PSDSParams = PSDS1,
    *,
    durations=None,
    hop: float = FRAME_HOP_S,
) -> dict:
    """Exact PSDS with ``params`` (see ``PSDS1``, ``PSDS2``); returns value, per-class and curve."""
    if (params.alpha_ct == 0) != (params.cttc is None):
        raise InputError("PSDS needs cttc exactly when alpha_ct is non-zero")
    points = intersection_operating_points(
        scores,
        ground_truth,
        class_names,
        dtc=params.dtc,
        gtc=params.gtc,
        cttc=params.cttc,
        durations=durations,
        hop=hop,
    )
    return psds_from_points(points, params)


def psds1(scores, ground_truth, class_names, **kwargs) -> float:
    """DCASE PSDS1 (dtc 0.7, gtc 0.7, α_ct 0, α_st 1, max eFPR 100/h)."""
    return psds(scores, ground_truth, class_names, PSDS1, **kwargs)["psds"]


def psds2(scores, ground_truth, class_names, **kwargs) -> float:
    """DCASE PSDS2 (dtc 0.1, gtc 0.1, cttc 0.3, α_ct 0.5, α_st 1, max eFPR 100/h)."""
    return psds(scores, ground_truth, class_names, PSDS2, **kwargs)["psds"]


def f1_from_points(points: OperatingPoints, thresholds: np.ndarray) -> dict:
    """Intersection F1 per class at each threshold (detections: score > threshold)."""
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if not points.tps:
        raise InputError("intersection F1 needs at least one class with ground-truth events")
    tps, fps = [], []
    for c in range(len(points.tps)):
        idx = np.searchsorted(points.thresholds[c], thresholds, "right")
        tps.append(points.tps[c][idx])
        fps.append(points.fps[c][idx])
    tps, fps = np.stack(tps), np.stack(fps)  # [classes, thresholds]
    n_ref = points.n_ref[:, None].astype(np.float64)
    precision = np.where(tps + fps > 0, tps / np.maximum(tps + fps, 1), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n_ref > 0, tps / n_ref, np.nan)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-15)
    eligible = points.n_ref > 0
    tp_sum, fp_sum, ref_sum = tps.sum(0), fps.sum(0), max(float(points.n_ref.sum()), 1.0)
    p_micro = tp_sum / np.maximum(tp_sum + fp_sum, 1)
    r_micro = tp_sum / ref_sum
    return {
        "thresholds": thresholds,
        "per_class": points.expand(f1),
        "macro": f1[eligible].mean(0) if eligible.any() else np.full(thresholds.shape, np.nan),
        "micro": 2 * p_micro * r_micro / np.maximum(p_micro + r_micro, 1e-15),
    }


def intersection_f1(
    scores,
    ground_truth,
    class_names,
    threshold: float = 0.5,
    *,
    dtc=0.5,
    gtc=0.5,
    durations=None,
    hop=FRAME_HOP_S,
) -> dict:
    """Intersection-based F1 at ``threshold``: ``macro`` (classes with events), ``micro``, ``per_class``."""
    points = intersection_operating_points(
        scores, ground_truth, class_names, dtc=dtc, gtc=gtc, durations=durations, hop=hop
    )
    out = f1_from_points(points, np.array([threshold]))
    return {
        "macro": float(out["macro"][0]),
        "micro": float(out["micro"][0]),
        "per_class": out["per_class"][:, 0],
    }


def intersection_f1_curve(
    scores, ground_truth, class_names, thresholds, *, dtc=0.5, gtc=0.5, durations=None, hop=FRAME_HOP_S
) -> dict:
    """Intersection-based F1 (macro, micro) at each threshold, exact at every grid point."""
    points = intersection_operating_points(
        scores, ground_truth, class_names, dtc=dtc, gtc=gtc, durations=durations, hop=hop
    )
    return f1_from_points(points, thresholds)


# --------------------------------------------------------------------------- segment-based AUROC


def _segment_scores_and_labels(scores, gt: EventTable, durations, segment_length, hop):
    """Per class: segment scores (max over the frames a segment overlaps) and targets (any
    strict overlap with an event), all clips concatenated; as sed_scores_eval."""
    num_clips, num_classes, frames = scores.shape
    ts = frame_boundaries(frames, hop)
    seg_scores, seg_labels = [], []
    for n in range(num_clips):
        n_seg = int(np.ceil(durations[n] / segment_length))
        bounds = round_time(np.arange(n_seg + 1) * segment_length)
        on, off = bounds[:-1], bounds[1:]
        first = np.maximum(np.searchsorted(ts, on, "right") - 1, 0)
        stop = np.minimum(np.searchsorted(ts, off, "left"), len(ts) - 1)
        block = np.zeros((num_classes, n_seg))
        for seg in np.flatnonzero(stop > first):
            block[:, seg] = scores[n][:, first[seg] : stop[seg]].max(1)
        lab = np.zeros((num_classes, n_seg), dtype=bool)
        sel = gt.clip == n
        for c, a, b in zip(gt.cls[sel], gt.onset[sel], gt.offset[sel], strict=True):
            lab[c] |= (on < b) & (off > a)
        seg_scores.append(block)
        seg_labels.append(lab)
    return np.concatenate(seg_scores, 1), np.concatenate(seg_labels, 1)


def _staircase_auroc(scores: np.ndarray, labels: np.ndarray, max_fpr: float | None) -> float:
    """sed_scores_eval's staircase ROC area (partial up to ``max_fpr``, divided by it).

    On the fpr level reached when the threshold passes the i-th distinct negative score,
    the height is the tpr just before the next negative is detected; so a positive tied
    with a negative counts 0 (sklearn would count one half).
    """
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    pos_sorted = np.sort(scores[labels])
    neg_desc = np.sort(scores[~labels])[::-1]
    last = np.r_[np.flatnonzero(np.diff(neg_desc) != 0), n_neg - 1]  # last index of each level
    levels = neg_desc[last]
    fpr = np.r_[0.0, (last + 1) / n_neg]
    # height on [fpr_i, fpr_{i+1}): positives strictly above the next negative level
    heights = (n_pos - np.searchsorted(pos_sorted, levels, "right")) / n_pos
    limit = 1.0 if max_fpr is None else float(max_fpr)
    widths = np.minimum(fpr[1:], limit) - np.minimum(fpr[:-1], limit)
    return float(np.sum(heights * widths) / limit)


def segment_auroc(
    scores, ground_truth, class_names, *, segment_length=1.0, max_fpr=None, durations=None, hop=FRAME_HOP_S
) -> dict:
    """Segment-based (partial) AUROC per class and their mean, as sed_scores_eval."""
    gt = (
        ground_truth
        if isinstance(ground_truth, EventTable)
        else EventTable.from_lists(ground_truth, class_names)
    )
    scores = _check_scores(scores, len(class_names)).astype(np.float64)
    durations = _durations(durations, scores.shape[0], scores.shape[2], hop)
    seg_scores, seg_labels = _segment_scores_and_labels(scores, gt, durations, segment_length, hop)
    per_class = np.array(
        [_staircase_auroc(seg_scores[c], seg_labels[c], max_fpr) for c in range(len(class_names))]
    )
    # Unlike sed_scores_eval (whose mean is NaN then), classes without positive or without
    # negative segments are left out of the mean.
    mean = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    return {"mean": mean, "per_class": per_class}


def mpauc(scores, ground_truth, class_names, *, durations=None, hop=FRAME_HOP_S) -> float:
    """MAESTRO's mean partial AUROC (DCASE 2024 task 4): 1 s segments, max FPR 0.1."""
    return segment_auroc(
        scores, ground_truth, class_names, segment_length=1.0, max_fpr=0.1, durations=durations, hop=hop
    )["mean"]
