"""Frame-level metrics on scores [clips, queries, frames] against frame labels of that shape.

- ``frame_auroc``: sklearn ``roc_auc_score`` on frame labels (ties count one half);
  micro = all (clip, query, frame) pooled, macro = mean over queries that have both
  positive and negative frames.
- ``roc_curve``: the pooled frame ROC for plots (exact, or binned for large sets).
- ``frame_f1_curve``: frame F1 against the threshold, the calibration curve.

They need frame labels only (``postprocess.events_to_frame_labels``), not event lists.
"""

import numpy as np

from flam_jax.errors import InputError


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
