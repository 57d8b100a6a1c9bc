"""Sound event detection metrics on frame scores [clips, queries, frames], in vectorised numpy.

Each metric reproduces a community toolkit (the tests use the toolkits as oracles):
``frame`` (frame AUROC = sklearn, pooled ROC, frame F1 curve), ``psd_roc`` (exact PSDS =
sed_scores_eval), ``fscore`` (intersection-based F1 = sed_scores_eval) and ``segment``
(segment-based AUROC and MPAUC = sed_scores_eval). ``psd_roc`` and ``fscore`` share the
exact per-threshold statistics of ``operating_points``; all of them read ground truth
and check scores through ``inputs``. Within the package, modules import downward only:
``inputs`` at the bottom, then ``frame``, ``operating_points`` and ``segment``, then
``psd_roc`` and ``fscore``. sed_eval's event- and segment-based F1 on event lists are in
``flam_jax.evals.event_based``.

Everything is re-exported here, so ``from flam_jax.evals import sed`` and ``sed.psds1``
work without naming the submodule.
"""

from flam_jax.evals.sed.frame import frame_auroc, frame_f1_curve, roc_curve
from flam_jax.evals.sed.fscore import f1_from_points, intersection_f1, intersection_f1_curve
from flam_jax.evals.sed.inputs import Event, EventTable, merge_overlapping, merged_event_lists
from flam_jax.evals.sed.operating_points import (
    OperatingPoints,
    intersection_operating_points,
)

# Private engine steps, checked directly by the tests (tests/test_evals_sed.py).
from flam_jax.evals.sed.operating_points import _cross_trigger_deltas as _cross_trigger_deltas
from flam_jax.evals.sed.operating_points import _pair_deltas as _pair_deltas
from flam_jax.evals.sed.psd_roc import (
    PSDS1,
    PSDS1_ALPHA_ST0,
    PSDS2,
    SECONDS_PER_HOUR,
    PSDSParams,
    psds,
    psds1,
    psds2,
    psds_from_points,
)
from flam_jax.evals.sed.segment import mpauc, segment_auroc

__all__ = [
    "PSDS1",
    "PSDS1_ALPHA_ST0",
    "PSDS2",
    "SECONDS_PER_HOUR",
    "Event",
    "EventTable",
    "OperatingPoints",
    "PSDSParams",
    "f1_from_points",
    "frame_auroc",
    "frame_f1_curve",
    "intersection_f1",
    "intersection_f1_curve",
    "intersection_operating_points",
    "merge_overlapping",
    "merged_event_lists",
    "mpauc",
    "psds",
    "psds1",
    "psds2",
    "psds_from_points",
    "roc_curve",
    "segment_auroc",
]
