"""Evaluation reports: ``metrics.json``, ``metrics.md`` and PNG plots in one folder.

Plots (SED benchmarks): ``roc.png`` (pooled frame ROC and the PSD-ROC of PSDS1),
``f1_vs_threshold.png`` (frame F1 and intersection F1 against the decision threshold: the
calibration figure, paper Fig. 3) and ``activation_maps.png`` (scores against reference
frames for a few clips).
"""

import io
import json
import math

import numpy as np

from flam_jax import paths


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    return value


def markdown_table(result: dict) -> str:
    rows = [f"| {k} | {_fmt(v)} |" for k, v in result["metrics"].items()]
    title = f"**{result['benchmark']}** ({result['task']}, split `{result['split']}`)"
    head = f"{title}\n\n| metric | value |\n|---|---|"
    return head + "\n" + "\n".join(rows) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        return "nan" if not math.isfinite(value) else f"{value:.4f}"
    return str(value)


def write_report(out_dir: str, result: dict, curves: dict, examples: list[dict]) -> list[str]:
    """Write the report (local or remote ``out_dir``); returns the paths written."""
    paths.makedirs(out_dir)
    written = []
    path = paths.join(out_dir, "metrics.json")
    plain = {**result, "metrics": {k: _plain(v) for k, v in result["metrics"].items()}}
    paths.write_text(path, json.dumps(plain, indent=2))
    written.append(path)
    path = paths.join(out_dir, "metrics.md")
    paths.write_text(path, markdown_table(result))
    written.append(path)
    if curves or examples:
        written += _plots(out_dir, result, curves, examples)
    return written


def _plots(out_dir, result, curves, examples) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    title = result["benchmark"]
    if "roc" in curves:
        fig, axes = plt.subplots(1, 2 if "psd_roc" in curves else 1, figsize=(10, 4), squeeze=False)
        fpr, tpr, _ = curves["roc"]
        axes[0, 0].plot(fpr, tpr)
        axes[0, 0].plot([0, 1], [0, 1], "k:", lw=0.8)
        axes[0, 0].set(
            xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: frame ROC (pooled)"
        )
        if "psd_roc" in curves:
            efpr, etpr = curves["psd_roc"]
            axes[0, 1].step(efpr, etpr, where="post")
            axes[0, 1].set(xlabel="eFPR per hour", ylabel="eTPR", title="PSD-ROC (PSDS1)")
        written.append(_save(fig, out_dir, "roc.png"))
    if "frame_f1" in curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        ff = curves["frame_f1"]
        ax.plot(ff["thresholds"], ff["micro"], label="frame F1 (pooled)")
        ax.plot(ff["thresholds"], ff["macro"], label="frame F1 (macro)")
        if "intersection_f1" in curves:
            inter = curves["intersection_f1"]
            ax.plot(inter["thresholds"], inter["macro"], label="intersection F1 (macro)")
        ax.axvline(0.5, color="k", ls=":", lw=0.8)
        ax.set(xlabel="decision threshold", ylabel="F1", title=f"{title}: F1 vs threshold", ylim=(0, 1))
        ax.legend()
        written.append(_save(fig, out_dir, "f1_vs_threshold.png"))
    if examples:
        fig, axes = plt.subplots(len(examples), 2, figsize=(12, 2.2 * len(examples)), squeeze=False)
        for row, ex in zip(axes, examples, strict=True):
            for ax, data, what in ((row[0], ex["scores"], "scores"), (row[1], ex["labels"], "reference")):
                ax.imshow(
                    data,
                    aspect="auto",
                    vmin=0,
                    vmax=1,
                    cmap="magma",
                    interpolation="nearest",
                    extent=(0, 10, len(data), 0),
                )
                ax.set_yticks(np.arange(len(data)) + 0.5, [q[:30] for q in ex["queries"]], fontsize=6)
                ax.set_title(f"{ex['name'][:40]}: {what}", fontsize=8)
            row[1].set_xlabel("time (s)")
        written.append(_save(fig, out_dir, "activation_maps.png"))
    return written


def _save(fig, out_dir, name) -> str:
    import matplotlib.pyplot as plt

    path = paths.join(out_dir, name)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    paths.write_bytes(path, buffer.getvalue())
    return path
