"""PSDS: the normalised area under the PSD-ROC (effective FPR per hour against TPR).

``psds`` / ``psds1`` / ``psds2`` reproduce sed_scores_eval ``intersection_based.psds``
exactly (every operating point, no threshold grid); ``PSDS1`` and ``PSDS2`` are the DCASE
parameter sets, ``PSDS1_ALPHA_ST0`` PSDS1 with α_st = 0 (the other protocol in the
literature). The statistics come from ``operating_points``.

PSDS2 costs far more than PSDS1 (≈ 2.5 min against 10–17 s at 2,000 clips × 400 classes
× 32 frames on a shared 2-core machine): its cross-trigger term visits every (clip,
class) pair whose class has no event in the clip (each distinct run once,
``operating_points._cross_trigger_deltas``).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flam_jax.errors import InputError
from flam_jax.evals.sed.operating_points import OperatingPoints, intersection_operating_points
from flam_jax.timeline import FRAME_HOP_S

SECONDS_PER_HOUR = 3600.0


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
# PSDS1's thresholds without the penalty on the spread of the per-class TPR (α_st = 0):
# the protocol of FineLAP's table; AudioSet-strong values differ ~3x between the two.
PSDS1_ALPHA_ST0 = PSDSParams(dtc=0.7, gtc=0.7, cttc=None, alpha_ct=0.0, alpha_st=0.0, max_efpr=100.0)
PSDS2 = PSDSParams(dtc=0.1, gtc=0.1, cttc=0.3, alpha_ct=0.5, alpha_st=1.0, max_efpr=100.0)


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
