"""SED metrics agree with the community toolkits on random and adversarial cases."""

import warnings

import numpy as np
import pandas as pd
import pytest
from evals_oracles import (
    active_classes,
    adversarial_case,
    ground_truth_dict,
    random_case,
    score_dataframes,
)
from sklearn.metrics import roc_auc_score

from flam_jax.errors import InputError
from flam_jax.evals import sed
from flam_jax.evals.event_based import event_f1, segment_f1
from flam_jax.evals.postprocess import events_to_frame_labels, scores_to_events

CASES = {
    "random": lambda: random_case(0),
    "random_noisy": lambda: random_case(1, noise=0.8),
    "adversarial": lambda: adversarial_case(2),
}
TOL = 1e-6


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    scores, events, names = CASES[request.param]()
    used, idx = active_classes(events, names)
    return {
        "scores": scores,
        "events": events,
        "names": names,
        "used": used,
        "idx": idx,
        # The toolkits refuse classes without events; DCASE recipes drop those columns.
        "frames": score_dataframes(scores[:, idx], used),
        "gt": ground_truth_dict(events),
        "durations": {f"clip{n:04d}": 10.0 for n in range(len(scores))},
    }


@pytest.mark.parametrize("which", ["psds1", "psds1_alpha_st0", "psds2"])
def test_psds_equals_sed_scores_eval(case, which):
    from sed_scores_eval import intersection_based

    params = {"psds1": sed.PSDS1, "psds1_alpha_st0": sed.PSDS1_ALPHA_ST0, "psds2": sed.PSDS2}[which]
    ref_value, ref_per_class, *_ = intersection_based.psds(
        case["frames"],
        case["gt"],
        case["durations"],
        dtc_threshold=params.dtc,
        gtc_threshold=params.gtc,
        cttc_threshold=params.cttc,
        alpha_ct=params.alpha_ct,
        alpha_st=params.alpha_st,
        max_efpr=params.max_efpr,
    )
    ours = sed.psds(case["scores"], case["events"], case["names"], params)
    assert 0.0 < ref_value < 1.0  # the case must exercise the curve, not a trivial end
    assert abs(ours["psds"] - ref_value) <= TOL
    for name, i in zip(case["used"], case["idx"], strict=True):
        assert abs(ours["per_class"][i] - ref_per_class[name]) <= TOL
    unused = sorted(set(range(len(case["names"]))) - set(case["idx"]))
    assert np.isnan(ours["per_class"][unused]).all()


@pytest.mark.parametrize("threshold", [0.25, 0.5, 0.75])
def test_intersection_f1_equals_sed_scores_eval(case, threshold):
    from sed_scores_eval import intersection_based

    f, *_ = intersection_based.fscore(
        case["frames"], case["gt"], threshold, dtc_threshold=0.5, gtc_threshold=0.5
    )
    ours = sed.intersection_f1(case["scores"], case["events"], case["names"], threshold)
    assert abs(ours["macro"] - f["macro_average"]) <= TOL
    assert abs(ours["micro"] - f["micro_average"]) <= TOL
    for name, i in zip(case["used"], case["idx"], strict=True):
        assert abs(ours["per_class"][i] - f[name]) <= TOL


def test_f1_curve_matches_single_thresholds(case):
    grid = np.array([0.1, 0.45, 0.8])
    curve = sed.intersection_f1_curve(case["scores"], case["events"], case["names"], grid)
    for k, thr in enumerate(grid):
        single = sed.intersection_f1(case["scores"], case["events"], case["names"], thr)
        assert curve["macro"][k] == pytest.approx(single["macro"], abs=1e-12)


@pytest.mark.parametrize(("segment_length", "max_fpr"), [(1.0, 0.1), (1.0, None), (0.3125, None)])
def test_segment_auroc_equals_sed_scores_eval(case, segment_length, max_fpr):
    from sed_scores_eval import segment_based

    ref, _ = segment_based.auroc(
        case["frames"], case["gt"], case["durations"], segment_length=segment_length, max_fpr=max_fpr
    )
    ours = sed.segment_auroc(
        case["scores"], case["events"], case["names"], segment_length=segment_length, max_fpr=max_fpr
    )
    for name, i in zip(case["used"], case["idx"], strict=True):
        assert abs(ours["per_class"][i] - ref[name]) <= TOL
    assert abs(ours["mean"] - ref["mean"]) <= TOL
    if segment_length == 1.0 and max_fpr == 0.1:
        assert sed.mpauc(case["scores"], case["events"], case["names"]) == ours["mean"]


def test_frame_auroc_equals_sklearn(case):
    labels = events_to_frame_labels(case["events"], case["names"], case["scores"].shape[2])
    ours = sed.frame_auroc(case["scores"], labels)
    assert abs(ours["micro"] - roc_auc_score(labels.reshape(-1), case["scores"].reshape(-1))) <= TOL
    per_query = []
    for q in range(len(case["names"])):
        y = labels[:, q].reshape(-1)
        if 0 < y.sum() < y.size:
            per_query.append(roc_auc_score(y, case["scores"][:, q].reshape(-1)))
            assert abs(ours["per_query"][q] - per_query[-1]) <= TOL
        else:
            assert np.isnan(ours["per_query"][q])
    assert abs(ours["macro"] - np.mean(per_query)) <= TOL
    assert ours["num_eligible_queries"] == len(per_query)


def _sed_eval_lists(events):
    from sed_eval.util import event_list  # noqa: F401  (import check: sed_eval loads)

    return [
        [{"file": f"clip{n:04d}", "onset": a, "offset": b, "event_label": c} for a, b, c in clip]
        for n, clip in enumerate(events)
    ]


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_event_and_segment_f1_equal_sed_eval(case, threshold):
    import sed_eval

    estimated = scores_to_events(case["scores"], case["names"], threshold)
    reference = [list(e) for e in ground_truth_dict(case["events"]).values()]
    ev = sed_eval.sound_event.EventBasedMetrics(
        case["names"], t_collar=0.2, percentage_of_length=0.2, evaluate_onset=True, evaluate_offset=True
    )
    seg = sed_eval.sound_event.SegmentBasedMetrics(case["names"], time_resolution=1.0)
    for est, ref in zip(_sed_eval_lists(estimated), _sed_eval_lists(reference), strict=True):
        ev.evaluate(ref, est)
        seg.evaluate(ref, est, evaluated_length_seconds=10.0)
    for ours, toolkit in [
        (event_f1(estimated, case["events"], case["names"]), ev),
        (segment_f1(estimated, case["events"], case["names"], [10.0] * len(estimated)), seg),
    ]:
        overall = toolkit.results_overall_metrics()["f_measure"]["f_measure"]
        macro = toolkit.results_class_wise_average_metrics()["f_measure"]["f_measure"]
        np.testing.assert_allclose(ours["micro"], overall, atol=TOL)
        np.testing.assert_allclose(ours["macro"], macro, atol=TOL)
        classwise = toolkit.results_class_wise_metrics()
        for i, name in enumerate(case["names"]):
            np.testing.assert_allclose(
                ours["per_class"][i], classwise[name]["f_measure"]["f_measure"], atol=TOL
            )


def _sed_eval_event_f1(est, ref):
    import sed_eval

    metric = sed_eval.sound_event.EventBasedMetrics(["a"], t_collar=0.2, percentage_of_length=0.2)
    for e, r in zip(_sed_eval_lists(est), _sed_eval_lists(ref), strict=True):
        metric.evaluate(r, e)
    return metric.results_overall_metrics()["f_measure"]["f_measure"]


def test_collar_ties():
    # Onset gap of exactly 200 ms: 1.0 − 0.8 is 0.19999999999999996 in floats, so sed_eval
    # also counts it; 2.2 − 2.0 is 0.20000000000000018, which sed_eval misses and we count
    # (gaps are compared after rounding to 6 decimals). Same for the offset tolerance.
    cases = [
        ([(0.8, 4.0, "a")], [(1.0, 4.0, "a")], 1.0, 1.0),
        ([(2.0, 4.0, "a")], [(2.2, 4.0, "a")], 1.0, 0.0),
        ([(1.0, 3.8, "a")], [(1.0, 4.0, "a")], 1.0, 1.0),  # offset: max(0.2, 0.2·3.0) = 0.6
        ([(1.0, 6.4, "a")], [(1.0, 5.0, "a")], 0.0, 0.0),  # offset off by 1.4 > 0.8
    ]
    for est, ref, ours, toolkit in cases:
        assert event_f1([est], [ref], ["a"])["micro"] == ours
        assert _sed_eval_event_f1([est], [ref]) == toolkit
    assert event_f1([[(1.99, 4.0, "a")]], [[(2.2, 4.0, "a")]], ["a"])["micro"] == 0.0


def test_psds_equals_psds_eval_with_every_threshold():
    """psds_eval samples operating points; with a threshold between every pair of the
    quantised score levels it sees every operating point and must agree."""
    from psds_eval import PSDSEval

    scores, events, names = random_case(5, clips=40, classes=4, noise=0.7)
    scores = np.round(scores * 10) / 10
    used, idx = active_classes(events, names)
    scores = scores[:, idx]
    gt = ground_truth_dict(events)
    cols = ["filename", "onset", "offset", "event_label"]
    gt_table = pd.DataFrame([(k, *e) for k, ev in gt.items() for e in ev], columns=cols)
    meta = pd.DataFrame([(k, 10.0) for k in gt], columns=["filename", "duration"])
    thresholds = np.arange(-0.05, 1.0, 0.1)
    detections = []
    for thr in thresholds:
        est = scores_to_events(scores, used, thr, filter_size=1)
        rows = [(f"clip{n:04d}", *e) for n, clip in enumerate(est) for e in clip]
        detections.append(pd.DataFrame(rows, columns=cols))
    for params in (sed.PSDS1, sed.PSDS2):
        evaluator = PSDSEval(
            dtc_threshold=params.dtc,
            gtc_threshold=params.gtc,
            cttc_threshold=params.cttc if params.cttc is not None else 0.3,
            ground_truth=gt_table,
            metadata=meta,
            class_names=used,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for det in detections:
                evaluator.add_operating_point(det)
            ref = evaluator.psds(alpha_ct=params.alpha_ct, alpha_st=params.alpha_st, max_efpr=params.max_efpr)
        ours = sed.psds(scores, events, used, params)["psds"]
        assert ref.value > 0
        assert abs(ours - ref.value) <= TOL


def test_psds_is_perfect_for_perfect_scores_and_rejects_bad_input():
    scores, events, names = random_case(7, clips=20)
    labels = events_to_frame_labels(events, names, 32).astype(np.float64)
    # Frame-grid labels cover each event fully: detections pass dtc and gtc at 0.7? Only
    # when the event fills most of its frames; the result must still be the maximum.
    perfect = sed.psds(labels, events, names, sed.PSDS2)["psds"]
    noisy = sed.psds(
        0.5 * labels + 0.5 * np.random.default_rng(0).random(labels.shape), events, names, sed.PSDS2
    )
    assert perfect >= noisy["psds"]
    with pytest.raises(InputError):
        sed.psds(scores[:, :2], events, names)
    with pytest.raises(InputError):
        sed.psds(scores, [[(1.0, 2.0, "unknown")]] * len(scores), names)
    with pytest.raises(InputError):
        sed.psds(scores, [[]] * len(scores), names)


@pytest.mark.parametrize("levels", [None, 5, 2])
def test_cross_trigger_shortcut_equals_full_run_analysis(levels):
    """PSDS2's per-distinct-run cross-trigger deltas give the same statistics at every
    threshold as enumerating the runs of every threshold (ties included)."""
    from flam_jax.timeline import frame_boundaries

    rng = np.random.default_rng(3)
    pairs, others, events = 120, 3, 2
    scores = rng.random((pairs, 32))
    if levels:
        scores = np.round(scores * levels) / levels
    on = np.round(rng.uniform(0, 9, (pairs, others, events)), 3)
    off = np.round(np.minimum(on + rng.uniform(0.1, 4, on.shape), 10), 3)
    valid = rng.random(on.shape) < 0.7
    other = (np.where(valid, on, 0), np.where(valid, off, 0), valid, rng.random((pairs, others)))
    no_target = (np.zeros((pairs, 1)), np.zeros((pairs, 1)), np.zeros((pairs, 1), bool))
    edges = frame_boundaries(32)
    _, _, full = sed._pair_deltas(scores, no_target, other, edges, 0.1, 0.1, 0.3)
    short = sed._cross_trigger_deltas(scores, other, edges, 0.3)
    assert np.abs(full).sum() > 0
    # Statistics at τ = sum of the deltas of frames with score ≥ τ: compare at every τ.
    at_least = scores[:, None, :] >= scores[:, :, None]  # [pair, τ = each frame's score, frame]
    np.testing.assert_allclose(
        (at_least * full[:, None]).sum(-1), (at_least * short[:, None]).sum(-1), atol=1e-9
    )


def test_roc_curve_equals_sklearn_and_binned_is_close(case):
    from sklearn.metrics import roc_curve as sk_roc_curve

    labels = events_to_frame_labels(case["events"], case["names"], case["scores"].shape[2])
    fpr, tpr, thr = sed.roc_curve(case["scores"], labels)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(
        labels.reshape(-1), case["scores"].reshape(-1), drop_intermediate=False
    )
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    b_fpr, b_tpr, _ = sed.roc_curve(case["scores"], labels, bins=2000)
    assert (b_fpr[0], b_tpr[0], b_fpr[-1], b_tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert abs(np.trapezoid(b_tpr, b_fpr) - np.trapezoid(tpr, fpr)) < 1e-3
