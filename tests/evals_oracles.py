"""Shared test helpers for the evaluation tests: case generators and toolkit adapters.

The reference toolkits (sed_scores_eval, sed_eval, psds_eval) are the oracles. sed_eval
imports dcase_util, which imports ``pkg_resources`` at module level although it only uses
it in functions these tests never call; setuptools ≥ 81 no longer ships it, so an empty
stand-in module is registered when the real one is missing.
"""

import importlib.util
import sys
import types

import numpy as np

from flam_jax.evals.postprocess import events_to_frame_labels
from flam_jax.timeline import frame_boundaries

if importlib.util.find_spec("pkg_resources") is None:
    sys.modules.setdefault("pkg_resources", types.ModuleType("pkg_resources"))

HOP = 0.3125


def random_case(seed: int, clips: int = 60, classes: int = 5, frames: int = 32, noise: float = 0.6):
    """Scores correlated with random events; decimal event times; the last class never active."""
    rng = np.random.default_rng(seed)
    names = [f"class_{i}" for i in range(classes)]
    events = []
    for _ in range(clips):
        clip = []
        for _ in range(int(rng.integers(0, 4))):
            onset = round(float(rng.uniform(0, 9.5)), 3)
            offset = round(min(10.0, onset + float(rng.uniform(0.1, 4.0))), 3)
            clip.append((onset, offset, names[int(rng.integers(0, classes - 1))]))
        events.append(clip)
    labels = events_to_frame_labels(events, names, frames)
    scores = (1 - noise) * labels + noise * rng.random(labels.shape)
    return scores, events, names


def adversarial_case(seed: int, clips: int = 40, classes: int = 4, frames: int = 32):
    """Grid-aligned events (intersections exactly at the 0.7/0.1 criteria), events touching
    both clip ends, overlapping and touching same-class events, empty clips, a never-active
    class, and scores quantised to 0.1 (many ties)."""
    rng = np.random.default_rng(seed)
    names = [f"class_{i}" for i in range(classes)]
    events = []
    for n in range(clips):
        kind = n % 5
        clip = []
        if kind == 0:  # whole clip, both ends touched
            clip.append((0.0, 10.0, names[0]))
        elif kind == 1:  # on the frame grid: 10 frames, so 7 covered frames is exactly 70 %
            start = int(rng.integers(0, 20))
            clip.append((start * HOP, (start + 10) * HOP, names[1]))
            clip.append((0.0, 3 * HOP, names[2]))
        elif kind == 2:  # overlapping and touching same-class events
            clip.append((1.0, 3.0, names[1]))
            clip.append((2.5, 4.0, names[1]))
            clip.append((4.0, 5.5, names[1]))
            clip.append((8.1, 10.0, names[2]))
        elif kind == 3:  # decimal times sharing edges with another class
            clip.append((0.2, 1.4, names[0]))
            clip.append((1.4, 2.6, names[2]))
        events.append(clip)  # kind 4: no events
    labels = events_to_frame_labels(events, names, frames)
    scores = np.round(0.5 * labels + 0.5 * rng.random(labels.shape), 1)
    return scores, events, names


def active_classes(events, names):
    """Names (and their indices) of the classes with at least one event."""
    used = sorted({e[2] for clip in events for e in clip}, key=names.index)
    return used, [names.index(u) for u in used]


def score_dataframes(scores, names):
    """sed_scores_eval input: {clip_id: DataFrame(onset, offset, *classes)}."""
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    edges = frame_boundaries(scores.shape[2], HOP)
    return {
        f"clip{n:04d}": create_score_dataframe(scores[n].T, edges, list(names)) for n in range(len(scores))
    }


def ground_truth_dict(events):
    """sed_scores_eval ground truth {clip_id: [(onset, offset, label), …]} (merged, as it requires)."""
    from flam_jax.evals.sed import merged_event_lists

    return {f"clip{n:04d}": [tuple(e) for e in clip] for n, clip in enumerate(merged_event_lists(events))}
