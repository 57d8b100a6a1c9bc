"""PSDS1 + frame AUROC on 2,000 clips × 400 classes × 32 frames: ours vs sed_scores_eval.

Both compute the same two numbers from the same scores and ground truth:
- PSDS1: ``flam_jax.evals.sed.psds1`` vs ``sed_scores_eval.intersection_based.psds``;
- frame AUROC (macro over classes): ``sed.frame_auroc(...)["macro"]`` vs
  ``sed_scores_eval.segment_based.auroc(segment_length=0.3125)["mean"]`` (segments = frames).
Scores are continuous float64 (no ties), so sklearn's and the staircase AUROC coincide.
Timings include building sed_scores_eval's DataFrames (its required input format).

Usage: python benchmarks/metrics_speed.py [--clips 2000 --classes 400 --skip-toolkit]
"""

import argparse
import importlib.util
import platform
import subprocess
import sys
import time
import types

import numpy as np

from flam_jax.evals import sed
from flam_jax.evals.postprocess import events_to_frame_labels
from flam_jax.timeline import frame_boundaries

if importlib.util.find_spec("pkg_resources") is None:  # dcase_util needs it at import only
    sys.modules.setdefault("pkg_resources", types.ModuleType("pkg_resources"))


def make_case(clips: int, classes: int, frames: int = 32, seed: int = 0):
    """1–10 events per clip (every class used at least once); scores correlated with them."""
    rng = np.random.default_rng(seed)
    names = [f"class_{i:03d}" for i in range(classes)]
    events, next_unused = [], 0
    for _ in range(clips):
        clip = []
        for _ in range(int(rng.integers(1, 11))):
            c = next_unused if next_unused < classes else int(rng.integers(0, classes))
            next_unused += 1
            onset = round(float(rng.uniform(0, 9.0)), 3)
            offset = round(min(10.0, onset + float(rng.uniform(0.2, 5.0))), 3)
            clip.append((onset, offset, names[c]))
        events.append(clip)
    labels = events_to_frame_labels(events, names, frames)
    scores = 0.45 * labels + 0.55 * rng.random(labels.shape)
    return scores, labels, events, names


def ours(scores, labels, events, names):
    t0 = time.perf_counter()
    value = sed.psds1(scores, events, names)
    t1 = time.perf_counter()
    auroc = sed.frame_auroc(scores, labels)["macro"]
    t2 = time.perf_counter()
    return value, auroc, t1 - t0, t2 - t1


def toolkit(scores, events, names):
    from sed_scores_eval import intersection_based, segment_based
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    t0 = time.perf_counter()
    edges = frame_boundaries(scores.shape[2])
    frames = {f"clip{n:05d}": create_score_dataframe(scores[n].T, edges, names) for n in range(len(scores))}
    gt = {f"clip{n:05d}": list(clip) for n, clip in enumerate(sed.merged_event_lists(events))}
    durations = {k: 10.0 for k in frames}
    t1 = time.perf_counter()
    value = intersection_based.psds(
        frames,
        gt,
        durations,
        dtc_threshold=0.7,
        gtc_threshold=0.7,
        alpha_ct=0.0,
        alpha_st=1.0,
        max_efpr=100.0,
    )[0]
    t2 = time.perf_counter()
    auroc = segment_based.auroc(frames, gt, durations, segment_length=0.3125)[0]["mean"]
    t3 = time.perf_counter()
    return value, auroc, (t2 - t1) + (t1 - t0) / 2, (t3 - t2) + (t1 - t0) / 2


def _row(name, psds, auroc, t_psds, t_auroc) -> str:
    return f"{name:16}{psds:12.8f}{auroc:14.8f}{t_psds:10.2f}{t_auroc:10.2f}{t_psds + t_auroc:10.2f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--skip-toolkit", action="store_true")
    args = parser.parse_args()
    scores, labels, events, names = make_case(args.clips, args.classes)
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
    machine = cpu.split(":", 1)[-1].strip() or platform.processor()
    print(f"machine: {machine}, python {platform.python_version()}")
    print(f"case: {args.clips} clips × {args.classes} classes × 32 frames, {sum(map(len, events))} events")
    o_psds, o_auc, o_t_psds, o_t_auc = ours(scores, labels, events, names)
    print(f"{'':16}{'PSDS1':>12}{'frame AUROC':>14}{'PSDS1 s':>10}{'AUROC s':>10}{'total s':>10}")
    print(_row("flam_jax", o_psds, o_auc, o_t_psds, o_t_auc))
    if args.skip_toolkit:
        return
    r_psds, r_auc, r_t_psds, r_t_auc = toolkit(scores, events, names)
    print(_row("sed_scores_eval", r_psds, r_auc, r_t_psds, r_t_auc))
    print(f"|Δ PSDS1| = {abs(o_psds - r_psds):.2e}, |Δ AUROC| = {abs(o_auc - r_auc):.2e}")
    print(f"speed-up (total): {(r_t_psds + r_t_auc) / (o_t_psds + o_t_auc):.1f}×")


if __name__ == "__main__":
    main()
