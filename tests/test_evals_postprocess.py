"""Post-processing: median filter as scipy, events as sed_scores_eval, gap merging, labels."""

import numpy as np
import pytest
from evals_oracles import score_dataframes
from scipy.ndimage import median_filter as scipy_median_filter

from flam_jax.errors import InputError
from flam_jax.evals.postprocess import events_to_frame_labels, scores_to_events
from flam_jax.timeline import frame_boundaries, median_filter


@pytest.mark.parametrize("size", [1, 3, 5])
def test_median_filter_equals_scipy_reflect(size):
    x = np.random.default_rng(0).random((3, 4, 32))
    ref = scipy_median_filter(x, size=(1, 1, size), mode="reflect")
    np.testing.assert_array_equal(median_filter(x, size), ref)
    with pytest.raises(InputError):
        median_filter(x, 2)


def test_frame_grid_is_exact():
    edges = frame_boundaries(32)
    assert edges[1] == 0.3125 and edges[-1] == 10.0 and len(edges) == 33


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_events_equal_sed_scores_eval(threshold):
    from sed_scores_eval.base_modules.detection import scores_to_event_list

    rng = np.random.default_rng(1)
    scores = np.round(rng.random((5, 3, 32)), 1)  # ties with the threshold included
    names = ["a", "b", "c"]
    ours = scores_to_events(scores, names, threshold, filter_size=1)
    frames = score_dataframes(scores, names)
    for n, key in enumerate(sorted(frames)):
        ref = scores_to_event_list(frames[key], threshold)
        assert ours[n] == sorted((float(a), float(b), c) for a, b, c in ref)


def test_gap_merging_and_min_duration():
    scores = np.zeros((1, 1, 32))
    scores[0, 0, 2:5] = 0.9  # 3 frames
    scores[0, 0, 6:8] = 0.9  # one-frame gap, then 2 frames
    scores[0, 0, 20] = 0.9  # a lone frame
    plain = scores_to_events(scores, ["x"], 0.5, filter_size=1)[0]
    assert plain == [(0.625, 1.5625, "x"), (1.875, 2.5, "x"), (6.25, 6.5625, "x")]
    merged = scores_to_events(scores, ["x"], 0.5, filter_size=1, max_gap=0.3125)[0]
    assert merged[0] == (0.625, 2.5, "x")
    long_only = scores_to_events(scores, ["x"], 0.5, filter_size=1, max_gap=0.3125, min_duration=0.5)[0]
    assert long_only == [(0.625, 2.5, "x")]
    # The default median filter removes the lone frame and fills the one-frame gap.
    assert scores_to_events(scores, ["x"], 0.5)[0] == [(0.625, 2.5, "x")]


def test_events_touching_clip_ends_and_frame_labels():
    scores = np.zeros((1, 2, 32))
    scores[0, 0, :3] = 1.0
    scores[0, 1, 29:] = 1.0
    events = scores_to_events(scores, ["start", "end"], 0.5)[0]
    assert events == [(0.0, 0.9375, "start"), (9.0625, 10.0, "end")]
    labels = events_to_frame_labels([events], ["start", "end"], 32)
    np.testing.assert_array_equal(labels[0], (scores[0] > 0.5).astype(np.uint8))
    # An event ending exactly on a frame edge does not touch the next frame.
    edge = events_to_frame_labels([[(0.3, 0.625, "start")]], ["start", "end"], 32)[0, 0]
    assert edge[:3].tolist() == [1, 1, 0]
    with pytest.raises(InputError):
        events_to_frame_labels([[(0.0, 1.0, "nope")]], ["start"], 32)
