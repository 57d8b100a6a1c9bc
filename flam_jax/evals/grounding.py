"""Text-to-audio grounding (TAG, the AudioGrounding benchmark of FineLAP and MGA-CLAP): the protocol.

FLAM_SPEC §10 names no TAG protocol; this one is a project decision (WORKSPACE "Spec decisions"):
- each (clip, phrase) pair is a "file" of its own with one class: the phrase text is the
  query, scored on its own clip only, and the phrase's segments are its ground truth;
- the same phrase twice in one clip (one caption) is one pair whose segments are merged
  (overlapping or touching ones joined: the same-class rule of ``sed.merge_overlapping``);
- a clip longer than 10 s is cut into the runner's SED windows, each (pair, window) a file;
- PSDS1 over all the files, under both protocols the runner reports (``psds1``: α_st = 1;
  ``psds1_alpha_st0``: α_st = 0), from 3-frame median-filtered scores as the SED benchmarks;
  with a single class the two agree (the α_st term penalises a spread across classes);
- frame AUROC pooled (micro) over every file's frames, from raw scores.

The runner (``runner.run_grounding``) calls the model and scores the files with the SED
benchmarks' ``sed_metrics`` (one class); this module holds what the protocol decides: the
pairs and the examples for the activation-map plot.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from flam_jax.evals import sed
from flam_jax.evals.benchmarks import Item
from flam_jax.evals.postprocess import events_to_frame_labels

CLASS = "phrase"  # the one class of every pair's file


@dataclasses.dataclass(frozen=True)
class Pair:
    """One (clip, phrase) pair: the item it belongs to, its query and its merged segments."""

    item: int
    query: str
    events: tuple[tuple[float, float, str], ...]  # (onset, offset, CLASS) over the whole clip


def pairs(items: Sequence[Item]) -> list[Pair]:
    """The pairs of every item, in item order and, within one, in order of first appearance."""
    out = []
    for i, item in enumerate(items):
        segments: dict[str, list] = {}
        for onset, offset, phrase in item.events:
            segments.setdefault(phrase, []).append((onset, offset, CLASS))
        for phrase, events in segments.items():
            out.append(Pair(i, phrase, tuple(sed.merged_event_lists([events])[0])))
    return out


def examples(
    items: Sequence[Item],
    pair_list: Sequence[Pair],
    index: Sequence[tuple[int, int]],
    scores: np.ndarray,
    events: Sequence[Sequence],
    count: int = 4,
    rows: int = 8,
) -> list[dict]:
    """The first windows of the items with the most phrases: one plot row per phrase."""
    labels = events_to_frame_labels(events, [CLASS], scores.shape[2])
    files: dict[int, list[int]] = {}  # item → its files in window 0
    for file, (p, k) in enumerate(index):
        if k == 0:
            files.setdefault(pair_list[p].item, []).append(file)
    chosen = sorted(files, key=lambda i: -len(files[i]))[:count]  # stable: ties keep item order
    out = []
    for i in chosen:
        shown = files[i][:rows]
        caption = items[i].captions[0] if items[i].captions else ""
        out.append(
            {
                "name": f"{items[i].id}: {caption}",
                "queries": [pair_list[index[f][0]].query for f in shown],
                "scores": scores[shown, 0],
                "labels": labels[shown, 0],
            }
        )
    return out
