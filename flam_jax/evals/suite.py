"""Benchmark suites: every benchmark of a suite the user has data for, in one table
(``flam-evaluate --suite=paper``).

``--data-dir`` is a root holding one folder per benchmark, named as in ``BENCHMARKS``
(``DATA/desed``, ``DATA/audiocaps``, ...), each what ``flam-evaluate --benchmark`` takes
(raw or built). A benchmark without its folder is listed as "no data" and skipped; one
that fails with a user error (a ``FlamError``) is listed as "error" and the others still
run. Each benchmark's own report goes to ``OUT/<benchmark>/``; the suite's table to
``OUT/paper.md`` and ``OUT/paper.json``.

The "paper" table follows FLAM_SPEC §10's layout: SED frame AUROC (DESED, MAESTRO as
MPAUC, AudioSet-S, UrbanSED; the paper's Held-out and ASFX-SED sets are not public),
PSDS1 under both protocols, retrieval R@1/R@5 in both directions (AudioCaps, Clotho),
zero-shot accuracy (ESC-50, US8K) and AudioGrounding (no published FLAM number). Values
are percentages; the published FLAM, FLAM-Global and OpenFLAM numbers sit beside each
measured one, "—" where the source has none.
"""

import dataclasses
import json
import math
from collections.abc import Callable

import numpy as np

from flam_jax import paths
from flam_jax.errors import DataError, FlamError, InputError
from flam_jax.evals.runner import evaluate
from flam_jax.evals.zeroshot import DEFAULT_TEMPLATE

MODELS = ("FLAM", "FLAM-Global", "OpenFLAM")
NONE = "—"


@dataclasses.dataclass(frozen=True)
class Row:
    section: str
    benchmark: str  # a BENCHMARKS name, also its folder under --data-dir
    label: str
    metric: str  # the runner's metric key (a fraction; shown ×100)
    published: tuple[float | None, float | None, float | None]  # percent, in MODELS order
    source: str = ""


NA = None  # no published number
# Published numbers, percent, copied from FLAM_SPEC §10. Sources: "P?" the paper as the spec
# reads it, "O" the openflam README ("P?; O": FLAM and FLAM-Global from the paper, OpenFLAM
# from the README). The PSDS values are the paper's as the README gives them
# ("presumably PSDS1"): beside psds1 (α_st = 1, DCASE's, the runner's reading of FLAM's
# paper); FineLAP's α_st = 0 protocol has none. None for OpenFLAM's zero-shot accuracy,
# DESED's and MAESTRO's PSDS, or AudioGrounding (FLAM's paper does not report it).
PAPER = tuple(
    Row(*fields)
    for fields in (
        # section, benchmark, label, metric, (FLAM, FLAM-Global, OpenFLAM), source
        ("SED frame AUROC", "desed", "DESED", "frame_auroc", (91.66, 85.52, NA), "P?"),
        ("SED frame AUROC", "maestro", "MAESTRO (MPAUC)", "mpauc", (56.97, 51.13, NA), "P?"),
        ("SED frame AUROC", "audioset-strong", "AudioSet-S", "frame_auroc", (94.76, 82.54, 94.24), "P?; O"),
        ("SED frame AUROC", "urbansed", "UrbanSED", "frame_auroc", (93.62, 67.39, 92.72), "P?; O"),
        ("PSDS1 (α_st = 1)", "desed", "DESED", "psds1", (NA, NA, NA), ""),
        ("PSDS1 (α_st = 1)", "maestro", "MAESTRO", "psds1", (NA, NA, NA), ""),
        ("PSDS1 (α_st = 1)", "audioset-strong", "AudioSet-S", "psds1", (11.16, 1.11, 9.53), "O"),
        ("PSDS1 (α_st = 1)", "urbansed", "UrbanSED", "psds1", (29.52, 0.82, 28.76), "O"),
        ("PSDS1 (α_st = 0)", "desed", "DESED", "psds1_alpha_st0", (NA, NA, NA), ""),
        ("PSDS1 (α_st = 0)", "maestro", "MAESTRO", "psds1_alpha_st0", (NA, NA, NA), ""),
        ("PSDS1 (α_st = 0)", "audioset-strong", "AudioSet-S", "psds1_alpha_st0", (NA, NA, NA), ""),
        ("PSDS1 (α_st = 0)", "urbansed", "UrbanSED", "psds1_alpha_st0", (NA, NA, NA), ""),
        ("Retrieval", "audiocaps", "AudioCaps T2A R@1", "t2a_R@1", (32.1, 36.0, 31.7), "O"),
        ("Retrieval", "audiocaps", "AudioCaps T2A R@5", "t2a_R@5", (64.8, 70.5, 63.8), "O"),
        ("Retrieval", "audiocaps", "AudioCaps A2T R@1", "a2t_R@1", (43.3, 46.1, 44.1), "O"),
        ("Retrieval", "audiocaps", "AudioCaps A2T R@5", "a2t_R@5", (75.0, 78.6, 76.7), "O"),
        ("Retrieval", "clotho", "Clotho T2A R@1", "t2a_R@1", (13.8, 14.3, 13.9), "O"),
        ("Retrieval", "clotho", "Clotho T2A R@5", "t2a_R@5", (33.2, 35.8, 33.6), "O"),
        ("Retrieval", "clotho", "Clotho A2T R@1", "a2t_R@1", (16.7, 17.9, 17.1), "O"),
        ("Retrieval", "clotho", "Clotho A2T R@5", "a2t_R@5", (42.2, 39.8, 39.3), "O"),
        ("Zero-shot accuracy", "esc50", "ESC-50", "accuracy", (86.9, 81.6, NA), "P?"),
        ("Zero-shot accuracy", "us8k", "US8K", "accuracy", (75.6, 65.4, NA), "P?"),
        ("AudioGrounding", "audiogrounding", "frame AUROC (pooled)", "frame_auroc", (NA, NA, NA), ""),
        ("AudioGrounding", "audiogrounding", "PSDS1 (α_st = 1)", "psds1", (NA, NA, NA), ""),
        ("AudioGrounding", "audiogrounding", "PSDS1 (α_st = 0)", "psds1_alpha_st0", (NA, NA, NA), ""),
    )
)
SUITES = {"paper": PAPER}


def suite_benchmarks(suite: str) -> list[str]:
    """The benchmarks of ``suite``, in table order."""
    if suite not in SUITES:
        raise InputError(f"unknown suite {suite!r} (use one of {', '.join(SUITES)})")
    return list(dict.fromkeys(row.benchmark for row in SUITES[suite]))


def _percent(value) -> float | None:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return round(100.0 * float(value), 2)


def _cell(value: float | None, measured: bool = True) -> str:
    """Measured values with two decimals; published ones as the source gives them."""
    if value is None:
        return NONE
    return f"{value:.2f}" if measured else str(value)


def suite_table(suite: str, results: dict) -> list[dict]:
    """Rows of the suite's table: measured (percent, or None) beside the published numbers."""
    rows = []
    for row in SUITES[suite]:
        result = results[row.benchmark]
        measured = _percent(result.get("metrics", {}).get(row.metric))
        rows.append(
            {
                "section": row.section,
                "benchmark": row.benchmark,
                "label": row.label,
                "metric": row.metric,
                "status": result["status"],
                "measured": measured,
                "published": dict(zip(MODELS, row.published, strict=True)),
                "source": row.source,
            }
        )
    return rows


def markdown(rows: list[dict], title: str, results: dict) -> str:
    head = ["section", "benchmark", "measured", *(f"{m} (published)" for m in MODELS), "source"]
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        measured = _cell(row["measured"]) if row["status"] == "measured" else row["status"]
        published = [_cell(row["published"][m], measured=False) for m in MODELS]
        cells = [row["section"], row["label"], measured, *published, row["source"] or NONE]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Percent. Published numbers: FLAM_SPEC §10 (P? the paper, O the openflam README)."]
    absent = [name for name, r in results.items() if r["status"] == "no data"]
    if absent:
        lines.append("No data: " + ", ".join(absent) + ".")
    lines += [f"Error: {name}: {r['error']}" for name, r in results.items() if r["status"] == "error"]
    return "\n".join(lines) + "\n"


def present_benchmarks(data_dir: str, suite: str = "paper") -> list[str]:
    """The benchmarks of ``suite`` with a folder under ``data_dir``; none is a DataError."""
    names = suite_benchmarks(suite)
    if not paths.isdir(data_dir):
        raise DataError(f"data directory not found: {data_dir}")
    present = [n for n in names if paths.isdir(paths.join(data_dir, n))]
    if not present:
        raise DataError(f"{data_dir} holds no benchmark folder (expected any of {', '.join(names)})")
    return present


def run_suite(
    model,
    data_dir: str,
    *,
    suite: str = "paper",
    out_dir: str | None = None,
    batch_size: int = 8,
    template: str = DEFAULT_TEMPLATE,
    cache_dir: str | None = None,
    label_file: str | None = None,
    progress: bool = False,
    method: str = "unbiased",
    model_name: str = "",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate ``model`` on every benchmark of ``suite`` under ``data_dir`` (module doc);
    returns ``{"benchmarks": {name: {status, split, metrics | error}}, "rows": [...], "markdown"}``
    and writes ``paper.md`` / ``paper.json`` (and each benchmark's report) to ``out_dir``."""
    names = suite_benchmarks(suite)
    if batch_size < 1:  # here, not once per benchmark
        raise InputError(f"batch size must be positive, got {batch_size}")
    present = present_benchmarks(data_dir, suite)
    log = log or (lambda line: None)
    results = {}
    for name in names:
        if name not in present:
            results[name] = {"status": "no data"}
            log(f"{name}: no data ({paths.join(data_dir, name)} not found), skipped")
            continue
        log(f"{name}: evaluating")
        try:
            result = evaluate(
                model,
                name,
                paths.join(data_dir, name),
                out_dir=paths.join(out_dir, name) if out_dir else None,
                batch_size=batch_size,
                template=template,
                # One cache per benchmark: DESED, UrbanSED, MAESTRO and AudioSet-strong are
                # all the `strong` kind and would find one another's build in a shared one.
                cache_dir=paths.join(cache_dir, name) if cache_dir else None,
                label_file=label_file,
                progress=progress,
                method=method,
            )
        except FlamError as err:  # one benchmark's bad data must not cost the others' hours
            results[name] = {"status": "error", "error": str(err)}
            log(f"{name}: error: {err}")
            continue
        results[name] = {"status": "measured", "split": result["split"], "metrics": result["metrics"]}
    rows = suite_table(suite, results)
    title = (
        f"**FLAM {suite} suite**" + (f": model `{model_name}`" if model_name else "") + f", data `{data_dir}`"
    )
    text = markdown(rows, title, results)
    summary = {"suite": suite, "model": model_name, "data_dir": data_dir, "units": "percent", "rows": rows}
    summary["benchmarks"] = {name: _plain(r) for name, r in results.items()}
    if out_dir:
        paths.makedirs(out_dir)
        paths.write_text(paths.join(out_dir, f"{suite}.md"), text)
        paths.write_text(paths.join(out_dir, f"{suite}.json"), json.dumps(summary, indent=2))
    return {**summary, "markdown": text}


def _plain(result: dict) -> dict:
    """A benchmark's result for JSON: numpy numbers as plain ones (NaN → None), strings kept."""
    metrics = {}
    for key, value in result.get("metrics", {}).items():
        if isinstance(value, str | bool):
            metrics[key] = value
        elif isinstance(value, int | np.integer):
            metrics[key] = int(value)
        else:
            number = float(value)
            metrics[key] = number if math.isfinite(number) else None
    return {**result, "metrics": metrics} if "metrics" in result else dict(result)
