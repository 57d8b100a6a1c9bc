"""Intersection-based F1 at chosen thresholds (sed_scores_eval ``intersection_based.fscore``).

``intersection_f1`` and ``intersection_f1_curve`` count as detections the scores strictly
above the threshold; the statistics come from ``operating_points``, so every threshold of
a curve is exact. The collar-based event F1 of sed_eval is ``evals.event_based``.
"""

import numpy as np

from flam_jax.errors import InputError
from flam_jax.evals.sed.operating_points import OperatingPoints, intersection_operating_points
from flam_jax.timeline import FRAME_HOP_S


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
