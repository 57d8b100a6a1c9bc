"""Segment-based AUROC on fixed-length segments (sed_scores_eval ``segment_based.auroc``).

``segment_auroc`` uses a staircase ROC, and a segment's score is the max over the frames
it overlaps; ``mpauc`` is the DCASE 2024 task 4 MAESTRO metric: 1 s segments, max_fpr
0.1, mean over classes. The segment F1 of sed_eval is ``evals.event_based``.
"""

import numpy as np

from flam_jax.evals.sed.inputs import EventTable, _check_scores, _durations
from flam_jax.timeline import FRAME_HOP_S, frame_boundaries, round_time


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
